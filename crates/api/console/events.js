// The live event feed: polls GET /api/v1/events?after= every second, newest first.

import { h, clear, time, json } from './dom.js';
import { t } from './i18n.js';
import * as api from './api.js';

const KEEP = 500;

export function render(main) {
  let alive = true;
  let cursor = '';
  let paused = false;
  let timer = null;
  const events = [];
  const types = new Set();
  const filter = h('select', { id: 'ev-filter', 'aria-label': t('ev.filter') }, h('option', { value: '' }, t('ev.allTypes')));
  const pause = h('button', { id: 'ev-pause', class: 'secondary', onclick: () => { paused = !paused; pause.textContent = paused ? t('ev.resume') : t('ev.pause'); if (!paused) tick(); } }, t('ev.pause'));
  const status = h('span', { class: 'muted small', id: 'ev-status', 'aria-live': 'polite' });
  const feed = h('ol', { id: 'event-feed', class: 'feed', reversed: true });
  filter.addEventListener('change', draw);
  clear(main, h('h1', {}, t('nav.events')),
    h('div', { class: 'filters' }, h('label', { for: 'ev-filter' }, t('ev.filter')), filter, pause, status),
    feed);

  function summary(e) {
    const d = e.data || {};
    const parts = [];
    if (d.number !== undefined) parts.push(`№ ${d.number}`);
    if (d.name) parts.push(d.name);
    if (d.sku) parts.push(d.sku);
    if (d.total !== undefined) parts.push(`${t('cash.total')}: ${(d.total / 100).toFixed(2)}`);
    if (d.on_hand !== undefined) parts.push(`${t('ev.onHand')}: ${d.on_hand}`);
    if (d.status) parts.push(d.status);
    if (d.message) parts.push(d.message);
    if (!parts.length && d.id) parts.push(d.id);
    return parts.join(' · ');
  }

  function draw() {
    const want = filter.value;
    const shown = events.filter((e) => !want || e.type === want);
    clear(feed, shown.length ? shown.map((e) => h('li', { class: 'event', 'data-type': e.type },
      h('details', {},
        h('summary', {}, h('time', { datetime: e.time }, time(e.time)), ' ', h('strong', { class: 'ev-type' }, e.type), ' ', h('span', { class: 'muted' }, summary(e))),
        json(e)))) : h('li', { class: 'muted empty' }, t('ev.none')));
  }

  function addTypes() {
    for (const e of events) {
      if (types.has(e.type)) continue;
      types.add(e.type);
      filter.append(h('option', { value: e.type }, e.type));
    }
  }

  async function tick() {
    clearTimeout(timer);
    if (!alive || paused) return;
    try {
      let fresh = [];
      for (let i = 0; i < 20; i++) {
        const q = new URLSearchParams({ limit: '200' });
        if (cursor) q.set('after', cursor);
        const page = await api.get(`/events?${q}`);
        const got = page.items || [];
        fresh = fresh.concat(got);
        if (page.next_cursor !== undefined) cursor = String(page.next_cursor);
        if (got.length < 200) break;
      }
      if (fresh.length) {
        events.unshift(...fresh.reverse());
        events.length = Math.min(events.length, KEEP);
        addTypes();
        draw();
      } else if (!feed.firstChild) draw();
      status.textContent = `${t('ev.updated')} ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      status.textContent = `${t('error')}: ${err.message}`;
    }
    if (alive) timer = setTimeout(tick, document.hidden ? 5000 : 1000);
  }

  tick();
  return () => { alive = false; clearTimeout(timer); };
}
