// Integrations: the catalogue of connector types, connecting one with a form generated from its
// fields, health and circuit state, test, sync jobs, the exchange log, mappings, disconnect.

import { h, clear, badge, kindOf, time, json, money } from './dom.js';
import { t } from './i18n.js';
import * as api from './api.js';

export function render(main) {
  let alive = true;
  let timer = null;
  const state = { catalog: [], list: [], selected: null, tab: 'log' };
  const banner = h('div', { id: 'integrations-banner', role: 'status' });
  const listBox = h('section', { id: 'integrations-list', 'aria-labelledby': 'h-connected' });
  const detail = h('section', { id: 'integration-detail' });
  const catalogBox = h('section', { id: 'catalog', 'aria-labelledby': 'h-catalog' });
  const formBox = h('div', { id: 'connect-form-box' });
  clear(main,
    h('h1', {}, t('nav.integrations')),
    banner,
    h('div', { class: 'cols' },
      h('div', { class: 'col-main' }, listBox, detail),
      h('div', { class: 'col-side' }, catalogBox, formBox)));

  const typeName = (kind) => (state.catalog.find((c) => typeOf(c) === kind) || {}).name || kind;

  async function load() {
    try {
      state.catalog = api.items(await api.get('/integrations/catalog'));
    } catch (e) {
      if (e.status === 404 || e.status === 405) {
        clear(banner, h('div', { class: 'notice warn', id: 'integrations-unavailable' }, t('int.unavailable')));
        clear(listBox);
        clear(catalogBox);
        return;
      }
      clear(banner, h('div', { class: 'notice bad' }, `${t('error')}: ${e.message}`));
      return;
    }
    await refreshList();
    renderCatalog();
  }

  async function refreshList() {
    try {
      state.list = api.items(await api.get('/integrations'));
      clear(banner);
    } catch (e) {
      clear(banner, h('div', { class: 'notice bad' }, `${t('error')}: ${e.message}`));
    }
    if (!alive) return;
    renderList();
    if (state.selected) {
      const still = state.list.find((i) => i.id === state.selected);
      if (!still) { state.selected = null; clear(detail); }
    }
  }

  function renderList() {
    clear(listBox, h('h2', { id: 'h-connected' }, t('int.connected')));
    if (!state.list.length) {
      listBox.append(h('p', { class: 'muted' }, t('int.none')));
      return;
    }
    const rows = state.list.map((i) => {
      const health = i.health || {};
      const circuit = circuitOf(i);
      const failing = i.status === 'failing' || health.status === 'down';
      return h('tr', { 'data-integration': i.id, 'data-type': typeOf(i), class: failing ? 'row-bad' : '' },
        h('td', {}, h('strong', {}, i.name || typeName(typeOf(i))), i.name && i.name !== typeName(typeOf(i)) ? h('div', { class: 'muted small' }, typeName(typeOf(i))) : null),
        h('td', { class: 'status' }, badge(t(`st.${i.status}`, {}, i.status), kindOf(i.status))),
        h('td', { class: 'health' },
          badge(health.status ? t(`st.${health.status}`, {}, health.status) : t('int.untested'), kindOf(health.status || 'untested')),
          health.latency_ms !== undefined ? h('span', { class: 'small muted' }, ` ${health.latency_ms} ms`) : null,
          health.message ? h('div', { class: 'small health-message' }, health.message) : null,
          health.checked_at ? h('div', { class: 'small muted' }, time(health.checked_at)) : null),
        h('td', { class: 'circuit' }, circuit ? badge(t(`circuit.${circuit}`, {}, circuit), kindOf(circuit)) : h('span', { class: 'muted' }, '—')),
        h('td', { class: 'actions' },
          h('button', { class: 'test', onclick: (e) => test(i, e.target) }, t('int.test')),
          h('button', { class: 'secondary open', onclick: () => select(i.id) }, t('int.details')),
          h('button', { class: 'danger disconnect', onclick: () => disconnect(i) }, t('int.disconnect'))));
    });
    listBox.append(h('table', { class: 'grid' },
      h('thead', {}, h('tr', {}, [t('int.name'), t('int.status'), t('int.health'), t('int.circuit'), ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows)));
  }

  async function test(i, button) {
    button.disabled = true;
    button.textContent = t('int.testing');
    try {
      await api.post(`/integrations/${i.id}/test`);
    } catch (e) {
      // A failed check is still a result: the list shows the stored health.
      if (e.status !== 502 && e.status !== 503 && e.status !== 422 && e.status !== 409) {
        clear(banner, h('div', { class: 'notice bad' }, `${t('error')}: ${e.message}`));
      }
    }
    await refreshList();
  }

  async function disconnect(i) {
    if (!confirm(t('int.confirmDisconnect', { name: i.name || typeOf(i) }))) return;
    try {
      await api.del(`/integrations/${i.id}`);
    } catch (e) {
      clear(banner, h('div', { class: 'notice bad' }, `${t('error')}: ${e.message}`));
    }
    await refreshList();
  }

  function select(id) {
    state.selected = id;
    renderDetail();
  }

  async function renderDetail() {
    const i = state.list.find((x) => x.id === state.selected);
    if (!i) return clear(detail);
    const desc = state.catalog.find((c) => typeOf(c) === typeOf(i)) || {};
    const caps = desc.capabilities || [];
    const tabs = [['log', t('int.log')], ['jobs', t('int.jobs')], ['settings', t('int.settings')]];
    if (caps.includes('marketplace')) tabs.push(['mappings', t('int.mappings')], ['orders', t('int.orders')]);
    if (!tabs.some(([k]) => k === state.tab)) state.tab = 'log';
    const body = h('div', { class: 'tab-body' });
    clear(detail,
      h('h2', {}, `${i.name || typeOf(i)} · ${typeName(typeOf(i))}`),
      h('div', { role: 'tablist', class: 'tabs' }, tabs.map(([k, label]) => h('button', {
        role: 'tab', id: `tab-${k}`, 'aria-selected': String(k === state.tab), class: k === state.tab ? 'tab active' : 'tab',
        onclick: () => { state.tab = k; renderDetail(); },
      }, label))),
      body);
    if (state.tab === 'log') logTab(i, body);
    else if (state.tab === 'jobs') jobsTab(i, body, caps);
    else if (state.tab === 'mappings') mappingsTab(i, body);
    else if (state.tab === 'orders') ordersTab(i, body);
    else settingsTab(i, body, desc);
  }

  function settingsTab(i, body, desc) {
    const creds = i.credentials || {};
    const rows = Object.entries(creds).map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', { class: 'mono' }, typeof v === 'string' ? v : JSON.stringify(v))));
    const srows = Object.entries(i.settings || {}).map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', { class: 'mono' }, typeof v === 'string' ? v : JSON.stringify(v))));
    clear(body,
      h('h3', {}, t('int.credentials')),
      rows.length ? h('table', { class: 'kv' }, h('tbody', {}, rows)) : h('p', { class: 'muted' }, t('int.masked')),
      h('h3', {}, t('int.settings')),
      srows.length ? h('table', { class: 'kv' }, h('tbody', {}, srows)) : h('p', { class: 'muted' }, '—'),
      (desc.capabilities || []).length ? h('p', {}, (desc.capabilities || []).map((c) => badge(t(`cap.${c}`, {}, c), 'muted'))) : null);
  }

  async function logTab(i, body) {
    const status = h('select', { id: 'log-status', 'aria-label': t('log.status') },
      h('option', { value: '' }, t('log.all')), h('option', { value: 'ok' }, t('log.ok')), h('option', { value: 'error' }, t('log.errors')));
    const since = h('input', { id: 'log-since', type: 'datetime-local', 'aria-label': t('log.since') });
    const op = h('input', { id: 'log-op', type: 'search', placeholder: t('log.operation'), 'aria-label': t('log.operation') });
    const table = h('div', { id: 'log-table' });
    const load = async () => {
      const q = new URLSearchParams({ limit: '100' });
      if (status.value) q.set('status', status.value);
      if (since.value) q.set('since', new Date(since.value).toISOString());
      try {
        let rows = api.items(await api.get(`/integrations/${i.id}/log?${q}`));
        if (op.value.trim()) rows = rows.filter((r) => String(r.operation || '').includes(op.value.trim()) || String(r.url || '').includes(op.value.trim()));
        clear(table, rows.length ? h('table', { class: 'grid small' },
          h('thead', {}, h('tr', {}, [t('log.time'), t('log.operation'), t('log.request'), t('log.status'), t('log.latency'), t('log.error')].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, rows.map((r) => h('tr', { class: r.error || (r.status && r.status >= 400) ? 'row-bad' : '' },
            h('td', {}, time(r.started_at || r.created_at)),
            h('td', {}, r.operation || ''),
            h('td', { class: 'mono' }, `${r.method || ''} ${r.url || ''}`, r.attempt > 1 ? h('span', { class: 'muted' }, ` #${r.attempt}`) : null),
            h('td', {}, r.status ? badge(String(r.status), r.status < 400 ? 'ok' : 'bad') : '—'),
            h('td', {}, r.latency_ms !== undefined ? `${r.latency_ms} ms` : ''),
            h('td', { class: 'small' }, r.error || ''))))) : h('p', { class: 'muted' }, t('log.empty')));
      } catch (e) {
        clear(table, h('p', { class: 'muted' }, e.status === 404 ? t('int.featureMissing') : `${t('error')}: ${e.message}`));
      }
    };
    for (const el of [status, since]) el.addEventListener('change', load);
    op.addEventListener('input', load);
    clear(body, h('div', { class: 'filters' }, status, since, op, h('button', { class: 'secondary', onclick: load }, t('refresh'))), table);
    load();
  }

  async function jobsTab(i, body, caps) {
    const list = h('div', { id: 'jobs' });
    const what = h('select', { id: 'sync-what', 'aria-label': t('jobs.what') },
      ['stock', 'prices', 'products', 'orders'].map((w) => h('option', { value: w }, t(`jobs.${w}`))));
    const start = h('button', {
      id: 'sync-start',
      onclick: async () => {
        try {
          await api.post(`/integrations/${i.id}/sync`, { what: what.value });
        } catch (e) {
          list.prepend(h('p', { class: 'error' }, `${t('error')}: ${[e.message, ...e.fields()].join('; ')}`));
        }
        load();
      },
    }, t('jobs.start'));
    const load = async () => {
      if (!alive || state.tab !== 'jobs' || state.selected !== i.id) return;
      try {
        const jobs = api.items(await api.get(`/integrations/${i.id}/jobs`));
        clear(list, jobs.length ? h('table', { class: 'grid small' },
          h('thead', {}, h('tr', {}, [t('jobs.what'), t('int.status'), t('jobs.progress'), t('jobs.errors'), t('log.time')].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, jobs.map((j) => h('tr', {},
            h('td', {}, j.what || j.kind || ''),
            h('td', {}, badge(t(`st.${j.status}`, {}, j.status), kindOf(j.status))),
            h('td', {}, h('progress', { max: String(j.total || Math.max(j.done || 0, 1)), value: String(j.done || 0) }), ` ${j.done || 0}${j.total ? ` / ${j.total}` : ''}`),
            h('td', {}, (j.errors || []).length ? h('details', {}, h('summary', {}, String(j.errors.length)), json(j.errors)) : '0'),
            h('td', {}, time(j.updated_at || j.created_at)))))) : h('p', { class: 'muted' }, t('jobs.none')));
        if (jobs.some((j) => ['running', 'queued', 'pending'].includes(j.status))) timer = setTimeout(load, 1500);
      } catch (e) {
        clear(list, h('p', { class: 'muted' }, e.status === 404 ? t('int.featureMissing') : `${t('error')}: ${e.message}`));
      }
    };
    clear(body, caps.includes('marketplace') ? h('div', { class: 'filters' }, what, start) : null, list);
    load();
  }

  // Marketplace items and our products side by side: filter, link by SKU or barcode, unlink,
  // and see each item's stock push (pending, last value sent, last error).
  async function mappingsTab(i, body) {
    const filter = h('select', { id: 'map-state', 'aria-label': t('map.filter') },
      h('option', { value: '' }, t('map.all')), h('option', { value: 'unmapped' }, t('map.unmapped')), h('option', { value: 'mapped' }, t('map.mapped')));
    const counts = h('p', { id: 'map-counts', class: 'small muted' });
    const msg = h('div', { id: 'map-message', role: 'status' });
    const table = h('div', { id: 'mappings' });
    const local = h('div', { id: 'unmapped-local' });
    let cursor = null;
    const findProduct = async (text) => {
      const q = text.trim();
      if (!q) return null;
      for (const key of ['sku', 'barcode']) {
        const found = api.items(await api.get(`/products?${key}=${encodeURIComponent(q)}&limit=2`));
        if (found.length === 1) return found[0];
      }
      const found = api.items(await api.get(`/products?q=${encodeURIComponent(q)}&limit=2`));
      return found.length === 1 ? found[0] : null;
    };
    const put = async (links) => {
      try {
        const r = await api.api('PUT', `/integrations/${i.id}/mappings`, { links });
        clear(msg, h('div', { class: 'notice ok' }, t('map.saved', { n: r.changed })));
      } catch (e) {
        clear(msg, h('div', { class: 'notice bad' }, `${t('error')}: ${[e.message, ...e.fields()].join('; ')}`));
      }
      load(false);
    };
    const pushCell = (p) => {
      if (!p) return '—';
      if (p.last_error) return h('span', { class: 'push-error' }, badge(t('map.failed'), 'bad'), h('div', { class: 'small' }, p.last_error));
      if (p.pending) return badge(t('map.pending'), 'warn');
      if (p.pushed_value !== null && p.pushed_value !== undefined) {
        return h('span', {}, badge(t('map.pushed'), 'ok'), h('span', { class: 'small muted' }, ` ${qty(p.pushed_value)} · ${time(p.pushed_at)}`));
      }
      return h('span', { class: 'muted' }, '—');
    };
    const row = (m) => {
      const input = h('input', { class: 'link-input', type: 'search', placeholder: t('map.skuOrBarcode'), 'aria-label': t('map.skuOrBarcode') });
      const link = h('button', {
        class: 'link',
        onclick: async () => {
          const p = await findProduct(input.value).catch(() => null);
          if (!p) return clear(msg, h('div', { class: 'notice bad' }, t('map.noProduct', { q: input.value })));
          put([{ external_id: m.external_id, product_id: p.id }]);
        },
      }, t('map.link'));
      return h('tr', { 'data-external-id': m.external_id, class: m.product_id ? '' : 'row-warn' },
        h('td', { class: 'mono' }, m.external_id, m.product_ext_id ? h('div', { class: 'small muted' }, m.product_ext_id) : null),
        h('td', {}, m.title, h('div', { class: 'small muted mono' }, (m.barcodes || []).join(', '))),
        h('td', { class: 'ours' }, m.product_id
          ? [h('strong', {}, m.product_sku || ''), ' ', m.product_name || '', h('div', { class: 'small muted' }, t(`map.by.${m.mapped_by}`, {}, m.mapped_by || ''))]
          : [h('span', { class: 'muted' }, m.note || t('map.notLinked'))]),
        h('td', {}, m.remote_stock !== null && m.remote_stock !== undefined ? qty(m.remote_stock) : '—'),
        h('td', { class: 'push' }, pushCell(m.stock)),
        h('td', { class: 'actions' }, m.product_id
          ? h('button', { class: 'secondary unlink', onclick: () => put([{ external_id: m.external_id, product_id: null }]) }, t('map.unlink'))
          : h('span', { class: 'link-box' }, input, link)));
    };
    const load = async (more) => {
      const q = new URLSearchParams({ limit: '50' });
      if (filter.value) q.set('state', filter.value);
      if (more && cursor) q.set('cursor', cursor);
      try {
        const r = await api.get(`/integrations/${i.id}/mappings?${q}`);
        const c = r.counts || {};
        counts.textContent = t('map.counts', { items: c.items ?? 0, mapped: c.mapped ?? 0, unmapped: c.unmapped ?? 0, local: c.unmapped_local ?? 0 });
        cursor = r.next_cursor || null;
        const rows = (r.items || []).map(row);
        const tbody = more ? table.querySelector('tbody') : null;
        if (tbody) tbody.append(...rows);
        else {
          clear(table, rows.length ? h('table', { class: 'grid small' },
            h('thead', {}, h('tr', {}, [t('map.item'), t('map.title'), t('map.ours'), t('map.remoteStock'), t('map.push'), ''].map((x) => h('th', { scope: 'col' }, x)))),
            h('tbody', {}, rows)) : h('p', { class: 'muted' }, t('map.none')));
        }
        table.querySelector('.more')?.remove();
        if (cursor) table.append(h('button', { class: 'secondary more', onclick: () => load(true) }, t('map.more')));
        const lp = (r.unmapped_local || {}).items || [];
        clear(local, h('h3', {}, t('map.localTitle')),
          lp.length ? h('ul', { class: 'small' }, lp.map((p) => h('li', { 'data-product': p.id || p.product_id },
            h('strong', {}, p.sku || ''), ' ', p.name || '', ' ', h('span', { class: 'muted mono' }, (p.barcodes || []).join(', '))))) : h('p', { class: 'muted' }, t('map.localNone')));
      } catch (e) {
        clear(table, h('p', { class: 'muted' }, e.status === 404 || e.status === 405 ? t('int.featureMissing') : `${t('error')}: ${e.message}`));
      }
    };
    filter.addEventListener('change', () => load(false));
    clear(body, h('div', { class: 'filters' }, filter, h('button', { class: 'secondary', onclick: () => load(false) }, t('refresh'))), counts, msg, table, local);
    load(false);
  }

  // Marketplace orders as imported: each an invoice, or waiting for attention with the reason.
  async function ordersTab(i, body) {
    const filter = h('select', { id: 'orders-state', 'aria-label': t('map.filter') },
      h('option', { value: '' }, t('map.all')),
      ['needs_attention', 'imported', 'cancelled'].map((s) => h('option', { value: s }, t(`ord.${s}`, {}, s))));
    const msg = h('div', { id: 'orders-message', role: 'status' });
    const table = h('div', { id: 'orders' });
    const load = async () => {
      const q = new URLSearchParams({ limit: '100' });
      if (filter.value) q.set('state', filter.value);
      try {
        const rows = api.items(await api.get(`/integrations/${i.id}/orders?${q}`));
        clear(table, rows.length ? h('table', { class: 'grid small' },
          h('thead', {}, h('tr', {}, [t('ord.order'), t('int.status'), t('ord.total'), t('ord.invoice'), t('ord.reason'), t('log.time'), ''].map((x) => h('th', { scope: 'col' }, x)))),
          h('tbody', {}, rows.map((o) => h('tr', { 'data-order': o.external_id, class: o.state === 'needs_attention' ? 'row-bad' : '' },
            h('td', { class: 'mono' }, o.external_id, h('div', { class: 'small muted' }, o.raw_status || '')),
            h('td', {}, badge(t(`ord.${o.state}`, {}, o.state), o.state === 'imported' ? 'ok' : o.state === 'needs_attention' ? 'bad' : 'muted'),
              o.confirmed_at ? h('div', { class: 'small muted' }, t('ord.confirmed')) : null),
            h('td', {}, money(o.total)),
            h('td', { class: 'mono small' }, o.invoice_id || '—'),
            h('td', { class: 'small' }, o.reason || o.confirm_error || ''),
            h('td', {}, time(o.updated_at || o.created_at)),
            h('td', {}, o.state === 'needs_attention' ? h('button', {
              class: 'retry',
              onclick: async () => {
                try {
                  await api.post(`/integrations/${i.id}/orders/${encodeURIComponent(o.external_id)}/retry`);
                } catch (e) {
                  clear(msg, h('div', { class: 'notice bad' }, `${t('error')}: ${e.message}`));
                }
                load();
              },
            }, t('ord.retry')) : null))))) : h('p', { class: 'muted' }, t('ord.none')));
      } catch (e) {
        clear(table, h('p', { class: 'muted' }, e.status === 404 || e.status === 405 ? t('int.featureMissing') : `${t('error')}: ${e.message}`));
      }
    };
    filter.addEventListener('change', load);
    clear(body, h('div', { class: 'filters' }, filter, h('button', { class: 'secondary', onclick: load }, t('refresh'))), msg, table);
    load();
  }

  function renderCatalog() {
    clear(catalogBox, h('h2', { id: 'h-catalog' }, t('int.catalog')),
      h('ul', { class: 'catalog' }, state.catalog.map((c) => h('li', { class: 'card', 'data-type': typeOf(c) },
        h('div', {}, h('strong', {}, c.name || typeOf(c)), ' ', h('span', { class: 'muted small mono' }, typeOf(c))),
        h('div', {}, (c.capabilities || []).map((cap) => badge(t(`cap.${cap}`, {}, cap), 'muted'))),
        h('button', { class: 'connect', onclick: () => connectForm(c) }, t('int.connect'))))));
  }

  function connectForm(desc) {
    const kind = typeOf(desc);
    const inputs = [];
    const error = h('div', { class: 'error', role: 'alert', id: 'connect-error' });
    const name = h('input', { id: 'f-name', name: 'name', value: desc.name || kind, required: true });
    const section = (title, prefix, fields) => {
      if (!fields || !fields.length) return null;
      const groups = [...new Set(fields.map((f) => f.group || ''))];
      return h('fieldset', {}, h('legend', {}, title),
        groups.length > 1 ? h('p', { class: 'small muted' }, t('int.oneGroup')) : null,
        groups.map((g) => h('div', { class: g ? 'group' : '' },
          g ? h('div', { class: 'small muted' }, `${t('int.group')}: ${g}`) : null,
          fields.filter((f) => (f.group || '') === g).map((f) => field(prefix, f)))));
    };
    const field = (prefix, f) => {
      const id = `f-${prefix}-${f.name}`;
      let el;
      const def = f.default;
      if (f.type === 'boolean') el = h('input', { id, type: 'checkbox', checked: def === true });
      else if (f.type === 'enum') el = h('select', { id }, f.required ? null : h('option', { value: '' }, '—'), (f.options || []).map((o) => h('option', { value: o, selected: def === o }, o)));
      else if (f.type === 'list' || f.type === 'map') el = h('textarea', { id, rows: '2', placeholder: f.type === 'map' ? '{"store id": "ref"}' : 'a, b', value: def !== undefined ? (f.type === 'map' ? JSON.stringify(def) : [].concat(def).join(', ')) : '' });
      else el = h('input', {
        id, type: f.secret ? 'password' : f.type === 'integer' ? 'number' : f.type === 'url' ? 'url' : 'text',
        autocomplete: f.secret ? 'new-password' : 'off', min: f.min !== undefined ? String(f.min) : null,
        value: def !== undefined && def !== null ? String(def) : '',
      });
      el.name = `${prefix}.${f.name}`;
      inputs.push({ prefix, f, el });
      const label = h('label', { for: id }, f.name, f.required ? h('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : null, f.secret ? h('span', { class: 'muted small' }, ` (${t('int.secret')})`) : null);
      const wrap = h('div', { class: f.type === 'boolean' ? 'field inline' : 'field', 'data-field': `${prefix}.${f.name}` },
        f.type === 'boolean' ? [el, ' ', label] : [label, el],
        f.description ? h('div', { class: 'small muted' }, f.description) : null,
        h('div', { class: 'field-error small' }));
      return wrap;
    };
    const submit = h('button', { type: 'submit', id: 'connect-submit' }, t('int.connect'));
    const form = h('form', {
      id: 'connect-form', class: 'card', 'data-type': kind,
      onsubmit: async (e) => {
        e.preventDefault();
        const body = { type: kind, name: name.value.trim(), credentials: {}, settings: {} };
        for (const { prefix, f, el } of inputs) {
          let v;
          if (f.type === 'boolean') v = el.checked;
          else if (el.value.trim() === '') continue;
          else if (f.type === 'integer') v = Number(el.value);
          else if (f.type === 'list') v = el.value.split(',').map((s) => s.trim()).filter(Boolean);
          else if (f.type === 'map') {
            try { v = JSON.parse(el.value); } catch { v = el.value; }
          } else v = f.secret ? el.value : el.value.trim();
          body[prefix][f.name] = v;
        }
        for (const d of form.querySelectorAll('.field-error')) d.textContent = '';
        error.textContent = '';
        submit.disabled = true;
        try {
          const created = await api.post('/integrations', body);
          clear(formBox);
          await refreshList();
          if (created && created.id) select(created.id);
        } catch (err) {
          const unplaced = [];
          for (const fe of err.problem.errors || []) {
            const slot = form.querySelector(`[data-field="${CSS.escape(fe.field || '')}"] .field-error`);
            if (slot) slot.textContent = fe.message; else unplaced.push(fe.field ? `${fe.field}: ${fe.message}` : fe.message);
          }
          error.textContent = [err.message, ...unplaced].join('; ');
          submit.disabled = false;
        }
      },
    },
    h('h2', {}, `${t('int.connect')}: ${desc.name || kind}`),
    h('div', { class: 'field' }, h('label', { for: 'f-name' }, t('int.name')), name),
    section(t('int.credentials'), 'credentials', desc.credential_fields),
    section(t('int.settings'), 'settings', desc.settings_fields),
    h('div', { class: 'buttons' }, submit, h('button', { type: 'button', class: 'secondary', onclick: () => clear(formBox) }, t('cancel'))),
    error);
    clear(formBox, form);
    form.scrollIntoView({ block: 'nearest' });
    name.focus();
  }

  load();
  const poll = setInterval(() => { if (alive && !document.hidden && state.list.length) refreshList(); }, 10000);
  return () => { alive = false; clearInterval(poll); clearTimeout(timer); };
}

function typeOf(x) {
  return x.type || x.kind || '';
}

/** The circuit breaker's state, wherever the server puts it. */
function circuitOf(i) {
  const c = i.circuit ?? i.breaker ?? i.circuit_state ?? (i.health || {}).circuit ?? null;
  if (c && typeof c === 'object') return c.state || c.status || null;
  return c;
}

/** Thousandths as a decimal quantity: 2500 -> "2.5". */
function qty(milli) {
  const neg = milli < 0;
  const a = Math.abs(milli);
  const frac = String(a % 1000).padStart(3, '0').replace(/0+$/, '');
  return (neg ? '-' : '') + Math.floor(a / 1000) + (frac ? `.${frac}` : '');
}
