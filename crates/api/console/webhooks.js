// Webhooks: subscriptions, the secret shown once, deliveries with retry, rotation, test.

import { h, clear, badge, kindOf, time } from './dom.js';
import { t } from './i18n.js';
import * as api from './api.js';

const COMMON = ['*', 'receipt.*', 'stock.changed', 'product.*', 'invoice.*', 'payment.*', 'integration.failed'];

export function render(main) {
  let alive = true;
  let selected = null;
  const notice = h('div', { id: 'webhook-notice', role: 'status' });
  const list = h('section', { id: 'webhook-list' });
  const deliveries = h('section', { id: 'deliveries' });
  const url = h('input', { id: 'wh-url', type: 'url', required: true, placeholder: 'https://example.com/savdo' });
  const events = h('input', { id: 'wh-events', value: '*', required: true });
  const description = h('input', { id: 'wh-description' });
  const error = h('div', { class: 'error', role: 'alert', id: 'wh-error' });
  const form = h('form', {
    id: 'webhook-form', class: 'card',
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = '';
      try {
        const body = {
          url: url.value.trim(),
          events: events.value.split(',').map((s) => s.trim()).filter(Boolean),
        };
        if (description.value.trim()) body.description = description.value.trim();
        const w = await api.post('/webhooks', body);
        showSecret(t('wh.created'), w.secret);
        url.value = '';
        await load();
      } catch (err) {
        error.textContent = [err.message, ...err.fields()].join('; ');
      }
    },
  },
  h('h2', {}, t('wh.new')),
  h('div', { class: 'field' }, h('label', { for: 'wh-url' }, t('wh.url')), url),
  h('div', { class: 'field' }, h('label', { for: 'wh-events' }, t('wh.events')), events,
    h('div', { class: 'chips' }, COMMON.map((c) => h('button', {
      type: 'button', class: 'chip',
      onclick: () => {
        const cur = events.value.split(',').map((s) => s.trim()).filter((s) => s && s !== '*');
        events.value = c === '*' ? '*' : [...new Set([...cur, c])].join(', ');
      },
    }, c)))),
  h('div', { class: 'field' }, h('label', { for: 'wh-description' }, t('wh.description')), description),
  h('button', { type: 'submit', id: 'wh-create' }, t('wh.create')),
  error);

  clear(main, h('h1', {}, t('nav.webhooks')), notice,
    h('div', { class: 'cols' }, h('div', { class: 'col-main' }, list, deliveries), h('div', { class: 'col-side' }, form)));

  function showSecret(title, secret) {
    clear(notice, h('div', { class: 'notice ok secret-box' },
      h('strong', {}, title), h('p', {}, t('wh.secretOnce')),
      h('code', { id: 'wh-secret', class: 'mono' }, secret),
      ' ', h('button', { class: 'secondary', onclick: () => navigator.clipboard && navigator.clipboard.writeText(secret) }, t('copy')),
      ' ', h('button', { class: 'secondary', onclick: () => clear(notice) }, t('close'))));
  }

  async function act(f) {
    try {
      await f();
    } catch (err) {
      clear(notice, h('div', { class: 'notice bad' }, `${t('error')}: ${[err.message, ...err.fields()].join('; ')}`));
    }
    await load();
  }

  async function load() {
    let hooks = [];
    try {
      hooks = api.items(await api.get('/webhooks'));
    } catch (err) {
      clear(list, h('p', { class: 'error' }, `${t('error')}: ${err.message}`));
      return;
    }
    if (!alive) return;
    clear(list, h('h2', {}, t('wh.subscriptions')), hooks.length ? h('table', { class: 'grid' },
      h('thead', {}, h('tr', {}, [t('wh.url'), t('wh.events'), t('int.status'), t('wh.secret'), ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, hooks.map((w) => h('tr', { 'data-webhook': w.id, class: w.id === selected ? 'selected' : '' },
        h('td', { class: 'mono' }, w.url, w.description ? h('div', { class: 'muted small' }, w.description) : null),
        h('td', { class: 'small' }, (w.events || []).join(', ')),
        h('td', {}, w.enabled ? (w.failing_since ? badge(t('wh.failingSince', { t: time(w.failing_since) }), 'warn') : badge(t('st.active'), 'ok')) : badge(t('st.disabled'), 'bad'),
          w.disabled_reason ? h('div', { class: 'small muted' }, w.disabled_reason) : null),
        h('td', { class: 'mono small' }, w.secret),
        h('td', { class: 'actions' },
          h('button', { class: 'secondary deliveries', onclick: () => { selected = w.id; load(); } }, t('wh.deliveries')),
          h('button', { class: 'secondary send-test', onclick: () => act(async () => { await api.post(`/webhooks/${w.id}/test`); selected = w.id; }) }, t('wh.test')),
          h('button', { class: 'secondary rotate', onclick: () => act(async () => { const r = await api.post(`/webhooks/${w.id}/rotate-secret`); showSecret(t('wh.rotated'), r.secret); }) }, t('wh.rotate')),
          h('button', { class: 'secondary toggle', onclick: () => act(() => api.patch(`/webhooks/${w.id}`, { enabled: !w.enabled })) }, w.enabled ? t('wh.disable') : t('wh.enable')),
          h('button', { class: 'danger delete', onclick: () => confirm(t('wh.confirmDelete')) && act(async () => { await api.del(`/webhooks/${w.id}`); if (selected === w.id) selected = null; }) }, t('delete'))))))) : h('p', { class: 'muted' }, t('wh.none')));
    await loadDeliveries();
  }

  async function loadDeliveries() {
    if (!selected) return clear(deliveries);
    let rows = [];
    try {
      rows = api.items(await api.get(`/webhooks/${selected}/deliveries`));
    } catch (err) {
      return clear(deliveries, h('p', { class: 'error' }, `${t('error')}: ${err.message}`));
    }
    if (!alive) return;
    clear(deliveries, h('h2', {}, t('wh.deliveries')), rows.length ? h('table', { class: 'grid small', id: 'delivery-table' },
      h('thead', {}, h('tr', {}, [t('log.time'), t('ev.type'), t('int.status'), t('wh.attempts'), t('wh.response'), t('log.error'), ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.map((d) => h('tr', { 'data-delivery': d.id },
        h('td', {}, time(d.updated_at || d.created_at)),
        h('td', {}, d.event_type),
        h('td', {}, badge(t(`st.${d.status}`, {}, d.status), kindOf(d.status))),
        h('td', {}, String(d.attempts ?? '')),
        h('td', {}, d.response_code ? `${d.response_code}${d.latency_ms !== null && d.latency_ms !== undefined ? ` · ${d.latency_ms} ms` : ''}` : '—'),
        h('td', { class: 'small' }, d.last_error || '', d.next_attempt_at ? h('div', { class: 'muted' }, `${t('wh.next')}: ${time(d.next_attempt_at)}`) : null),
        h('td', {}, d.status !== 'delivered' ? h('button', { class: 'secondary retry', onclick: () => act(() => api.post(`/webhooks/${selected}/deliveries/${d.id}/retry`)) }, t('wh.retry')) : null))))) : h('p', { class: 'muted' }, t('wh.noDeliveries')));
  }

  load();
  const poll = setInterval(() => { if (alive && !document.hidden && selected) loadDeliveries(); }, 3000);
  return () => { alive = false; clearInterval(poll); };
}
