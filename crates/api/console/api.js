// The API client: the signed-in token, JSON requests, problem+json errors, and feature detection
// from the OpenAPI document.

const KEY = 'savdo.token';

export function token() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || '';
}

export function signIn(value, remember) {
  signOut();
  (remember ? localStorage : sessionStorage).setItem(KEY, value);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
  /** `errors: [{field, message}]` of a 422, as "field: message" lines. */
  fields() {
    return (this.problem.errors || []).map((e) => (e.field ? `${e.field}: ${e.message}` : e.message));
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(f) {
  onUnauthorized = f;
}

async function raw(method, path, body, extra) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  Object.assign(headers, extra || {});
  const res = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) onUnauthorized();
  return res;
}

export async function api(method, path, body, extra) {
  const res = await raw(method, path, body, extra);
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text };
    }
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export const get = (p) => api('GET', p);
export const post = (p, b, extra) => api('POST', p, b === undefined ? {} : b, extra);
export const patch = (p, b) => api('PATCH', p, b);
export const del = (p) => api('DELETE', p);

/** A binary resource (an SVG) as an object URL, fetched with the token. */
export async function blobUrl(path) {
  const res = await raw('GET', path);
  if (!res.ok) throw new ApiError(res.status, null);
  return URL.createObjectURL(await res.blob());
}

/** `items` of a list answer, whatever its wrapping. */
export function items(x) {
  if (Array.isArray(x)) return x;
  if (x && Array.isArray(x.items)) return x.items;
  if (x && Array.isArray(x.types)) return x.types;
  return [];
}

let paths = null;
/** The paths of the server's OpenAPI document (fetched once). */
export async function apiPaths() {
  if (paths) return paths;
  try {
    const res = await fetch('/api/v1/openapi.json');
    const doc = await res.json();
    paths = Object.keys(doc.paths || {});
  } catch {
    paths = [];
  }
  return paths;
}

/** Whether the server documents a path starting with `prefix` (e.g. `/api/v1/payments`). */
export async function has(prefix) {
  return (await apiPaths()).some((p) => p === prefix || p.startsWith(prefix + '/'));
}
