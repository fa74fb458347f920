// Tiny DOM helpers: elements are built with h(), never from HTML strings (no injection).

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Tiyin as so'm with thousands separated by spaces: 1234500 -> "12 345,00". */
export function money(tiyin) {
  if (tiyin === null || tiyin === undefined) return '';
  const neg = tiyin < 0;
  const abs = Math.abs(tiyin);
  const whole = Math.floor(abs / 100).toString().replace(/\B(?=(\d{3})+(?!\d))/g, '\u00a0');
  const frac = String(abs % 100).padStart(2, '0');
  return (neg ? '−' : '') + whole + ',' + frac;
}

export function time(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** A status pill; `kind` picks the colour (ok, warn, bad, muted). */
export function badge(text, kind) {
  return h('span', { class: `badge ${kind || 'muted'}` }, text);
}

export function kindOf(status) {
  const s = String(status || '').toLowerCase();
  if (['ok', 'active', 'closed', 'delivered', 'succeeded', 'done', 'completed', 'registered', 'paid', 'fiscalized'].includes(s)) return 'ok';
  if (['degraded', 'half_open', 'half-open', 'pending', 'queued', 'running', 'retrying', 'untested'].includes(s)) return 'warn';
  if (['down', 'failing', 'open', 'failed', 'dead', 'error', 'disabled', 'cancelled'].includes(s)) return 'bad';
  return 'muted';
}

export function json(v) {
  return h('pre', { class: 'json' }, JSON.stringify(v, null, 2));
}
