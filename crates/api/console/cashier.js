// The cashier screen: store and till, scan or search products, marking codes per unit of a
// marked product, the cart, cash payment -> POST /api/v1/receipts (client-generated id), the
// receipt and its fiscal QR once the fiscal gateway has registered it.
//
// Two slots activate only when the server documents their endpoints (OpenAPI paths):
// loyalty (JOWi Club quote) and Payme/Click QR payments. Nothing is simulated here.

import { h, clear, money, uuid, badge, kindOf, time } from './dom.js';
import { t } from './i18n.js';
import * as api from './api.js';

const PREFS = 'savdo.cashier';

export function render(main) {
  let alive = true;
  const timers = new Set();
  const later = (f, ms) => { const id = setTimeout(() => { timers.delete(id); f(); }, ms); timers.add(id); };
  const prefs = JSON.parse(localStorage.getItem(PREFS) || '{}');
  const cart = []; // {product, qty, codes[]}
  let customer = null;
  // JOWi Club did not answer the card look-up: this sale goes on without quotes, rather than
  // make the cashier wait for it again at every change of the cart.
  let loyaltyDown = false;
  let quote = null;
  let pendingId = null; // kept until the receipt is accepted, so a retry is idempotent
  let features = { loyalty: false, payments: false };

  const storeSel = h('select', { id: 'c-store' });
  const tillSel = h('select', { id: 'c-till' });
  const shiftBox = h('span', { id: 'c-shift' });
  const barcode = h('input', { id: 'c-barcode', inputmode: 'numeric', autocomplete: 'off', placeholder: '4780…' });
  const search = h('input', { id: 'c-search', type: 'search', autocomplete: 'off' });
  const results = h('ul', { id: 'c-results', class: 'results' });
  const markingBox = h('div', { id: 'c-marking' });
  const cartBox = h('div', { id: 'c-cart' });
  const loyaltyBox = h('section', { id: 'c-loyalty', class: 'slot', 'aria-labelledby': 'h-loyalty' });
  const payBox = h('section', { id: 'c-pay' });
  const receiptBox = h('section', { id: 'c-receipt', 'aria-live': 'polite' });
  const message = h('div', { id: 'c-message', role: 'alert' });

  clear(main,
    h('div', { class: 'cashier-top' },
      h('h1', {}, t('nav.cashier')),
      h('label', { for: 'c-store' }, t('cash.store')), storeSel,
      h('label', { for: 'c-till' }, t('cash.till')), tillSel, shiftBox),
    message,
    h('div', { class: 'cashier' },
      h('div', { class: 'col-main' },
        h('form', { class: 'scan', onsubmit: (e) => { e.preventDefault(); scan(); } },
          h('label', { for: 'c-barcode' }, t('cash.barcode')), barcode, h('button', { type: 'submit', id: 'c-add' }, t('cash.add'))),
        h('form', { class: 'scan', onsubmit: (e) => { e.preventDefault(); find(); } },
          h('label', { for: 'c-search' }, t('cash.search')), search, h('button', { type: 'submit', class: 'secondary', id: 'c-find' }, t('cash.find'))),
        results, markingBox, cartBox),
      h('div', { class: 'col-side' }, loyaltyBox, payBox, receiptBox)));

  const say = (text, kind) => clear(message, text ? h('div', { class: `notice ${kind || 'bad'}` }, text) : null);
  const total = () => cart.reduce((s, l) => s + lineAmount(l), 0) - (quote ? quote.discount_total || 0 : 0);

  async function init() {
    const [stores, loyalty, payments] = await Promise.all([
      api.get('/stores').then(api.items).catch(() => []),
      api.has('/api/v1/loyalty'),
      api.has('/api/v1/payments'),
    ]);
    features = { loyalty, payments };
    clear(storeSel, stores.map((s) => h('option', { value: s.id, selected: s.id === prefs.store }, s.name)));
    storeSel.onchange = () => { prefs.store = storeSel.value; save(); loadTills(); };
    tillSel.onchange = () => { prefs.till = tillSel.value; save(); showShift(); };
    if (!stores.length) say(t('cash.noStores'), 'warn');
    await loadTills();
    drawCart();
    barcode.focus();
  }

  const save = () => localStorage.setItem(PREFS, JSON.stringify(prefs));
  let tills = [];
  async function loadTills() {
    if (!storeSel.value) return;
    tills = api.items(await api.get(`/terminals?store_id=${storeSel.value}`).catch(() => []));
    clear(tillSel, tills.map((x) => h('option', { value: x.id, selected: x.id === prefs.till }, x.name)));
    showShift();
  }

  function showShift() {
    const till = tills.find((x) => x.id === tillSel.value);
    if (!till) return clear(shiftBox);
    clear(shiftBox,
      till.open_shift ? badge(t('cash.shiftOpen'), 'ok') : [badge(t('cash.shiftClosed'), 'warn'), ' ',
        h('button', { class: 'secondary', id: 'c-open-shift', onclick: async () => {
          try { await api.post(`/terminals/${till.id}/shifts/open`); } catch (e) { if (e.status !== 409) say(e.message); }
          await loadTills();
        } }, t('cash.openShift'))],
      ' ', till.fiscal ? badge(t('cash.fiscalOn'), 'ok') : badge(t('cash.fiscalOff'), 'muted'));
  }

  async function scan() {
    const code = barcode.value.trim();
    if (!code) return;
    try {
      const found = api.items(await api.get(`/products?barcode=${encodeURIComponent(code)}`));
      if (!found.length) return say(t('cash.notFound', { code }), 'warn');
      barcode.value = '';
      add(found[0]);
    } catch (e) {
      say(e.message);
    }
  }

  async function find() {
    const q = search.value.trim();
    if (!q) return clear(results);
    try {
      let found = api.items(await api.get(`/products?q=${encodeURIComponent(q)}&limit=20`));
      if (!found.length) found = api.items(await api.get(`/products?sku=${encodeURIComponent(q)}`));
      clear(results, found.length ? found.map((p) => h('li', {},
        h('button', { class: 'link result', 'data-sku': p.sku, onclick: () => { clear(results); search.value = ''; add(p); } },
          h('span', {}, p.name, p.marked ? [' ', badge(t('cash.marked'), 'warn')] : null),
          h('span', { class: 'muted small' }, ` ${p.sku} · ${money(p.price)}`)))) : h('li', { class: 'muted' }, t('cash.nothing')));
    } catch (e) {
      say(e.message);
    }
  }

  function add(product) {
    say('');
    if (product.marked) return askMarking(product);
    const line = cart.find((l) => l.product.id === product.id);
    if (line) line.qty += 1; else cart.push({ product, qty: 1, codes: [] });
    changed();
  }

  // One prompt per unit: a marked product enters the cart only with its code.
  function askMarking(product) {
    const input = h('input', { id: 'c-marking-code', autocomplete: 'off', placeholder: '01…21…' });
    const err = h('div', { class: 'error small', role: 'alert' });
    clear(markingBox, h('form', {
      class: 'notice warn marking',
      onsubmit: (e) => {
        e.preventDefault();
        const code = input.value.trim();
        if (!code) return;
        if (cart.some((l) => l.codes.includes(code))) { err.textContent = t('cash.codeTwice'); return; }
        const line = cart.find((l) => l.product.id === product.id);
        if (line) { line.codes.push(code); line.qty = line.codes.length; } else cart.push({ product, qty: 1, codes: [code] });
        clear(markingBox);
        changed();
        barcode.focus();
      },
    },
    h('label', { for: 'c-marking-code' }, t('cash.scanMarking', { name: product.name })),
    h('div', { class: 'row' }, input, h('button', { type: 'submit', id: 'c-marking-ok' }, t('ok')),
      h('button', { type: 'button', class: 'secondary', onclick: () => { clear(markingBox); barcode.focus(); } }, t('cancel'))),
    err));
    input.focus();
  }

  function changed() {
    quote = null;
    pendingId = null;
    drawCart();
    if (customer && features.loyalty && !loyaltyDown) requestQuote();
  }

  function drawCart() {
    clear(cartBox, h('h2', {}, t('cash.cart')), cart.length ? h('table', { class: 'grid', id: 'cart' },
      h('thead', {}, h('tr', {}, [t('cash.product'), t('cash.price'), t('cash.qty'), t('cash.amount'), ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, cart.map((l, i) => h('tr', { 'data-sku': l.product.sku },
        h('td', {}, l.product.name, l.codes.length ? h('div', { class: 'small muted mono' }, l.codes.map((c) => h('div', {}, c))) : null),
        h('td', { class: 'num' }, money(l.product.price)),
        h('td', {}, l.product.marked
          ? h('span', {}, String(l.qty), ' ', h('button', { class: 'secondary small', 'aria-label': t('cash.addUnit'), onclick: () => askMarking(l.product) }, '+'))
          : h('input', { type: 'number', min: '0.001', step: 'any', class: 'qty', value: String(l.qty), 'aria-label': t('cash.qty'),
            onchange: (e) => { const v = Number(e.target.value); if (v > 0) { l.qty = Math.round(v * 1000) / 1000; changed(); } } })),
        h('td', { class: 'num' }, money(lineAmount(l))),
        h('td', {}, h('button', { class: 'danger small', 'aria-label': t('delete'), onclick: () => { cart.splice(i, 1); changed(); } }, '×'))))),
      h('tfoot', {}, h('tr', {}, h('th', { colspan: '3', scope: 'row' }, t('cash.total')), h('td', { class: 'num total', id: 'c-total' }, money(total())), h('td', {}))))
      : h('p', { class: 'muted' }, t('cash.empty')));
    drawLoyalty();
    drawPay();
  }

  // ---- Slot: loyalty card (JOWi Club). The card is looked up among our customers; discount and
  // points need the loyalty API, which this server may not have yet.
  function drawLoyalty() {
    const card = h('input', { id: 'c-card', autocomplete: 'off', inputmode: 'numeric' });
    clear(loyaltyBox, h('h2', { id: 'h-loyalty' }, t('loy.title')),
      !features.loyalty ? h('div', { class: 'notice warn', id: 'loyalty-unavailable' }, t('loy.unavailable')) : null,
      customer
        ? h('div', { id: 'c-customer' }, h('strong', {}, customer.name), ' ', h('span', { class: 'mono' }, customer.loyalty_card || ''),
          ' ', h('button', { class: 'secondary small', onclick: () => { customer = null; changed(); } }, t('loy.detach')),
          quote ? h('div', { id: 'c-quote' }, `${t('loy.discount')}: ${money(quote.discount_total || 0)} · ${t('loy.points')}: +${quote.points?.to_earn ?? 0} (${t('loy.balance')}: ${quote.points?.balance ?? '—'})`) : null)
        : h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); attach(card.value.trim()); } },
          h('label', { for: 'c-card', class: 'sr-only' }, t('loy.card')), card, h('button', { type: 'submit', class: 'secondary', id: 'c-attach' }, t('loy.attach'))));
  }

  async function attach(cardNo) {
    if (!cardNo) return;
    loyaltyDown = false;
    try {
      if (features.loyalty) {
        // JOWi Club finds the card and links (or creates) our customer record.
        const r = await api.get(`/loyalty/customers?card=${encodeURIComponent(cardNo)}`);
        if (r.customer) {
          customer = { id: r.customer.id, name: r.customer.name, loyalty_card: r.customer.card || cardNo };
          say('');
          changed();
          return;
        }
        // JOWi Club unavailable: the sale goes on without a discount; points come later.
        loyaltyDown = r.loyalty?.status === 'unavailable';
        say(r.warning || t('loy.unavailable'), 'warn');
      }
      const found = api.items(await api.get(`/customers?card=${encodeURIComponent(cardNo)}`));
      if (!found.length) return say(t('loy.noCustomer', { card: cardNo }), 'warn');
      customer = found[0];
      changed();
    } catch (e) {
      say(e.message);
    }
  }

  async function requestQuote() {
    // Active only when the server documents /api/v1/loyalty…: its quote gives the discount.
    try {
      const r = await api.post('/loyalty/quote', {
        store_id: storeSel.value, customer: { id: customer.id },
        lines: cart.map((l) => ({ product_id: l.product.id, qty: l.qty })),
      });
      quote = r.quote || null;
      if (!quote && r.warning) say(r.warning, 'warn');
    } catch (e) {
      quote = null;
      say(`${t('loy.title')}: ${e.message}`, 'warn');
    }
    drawCart();
  }

  function drawPay() {
    const cash = h('input', { id: 'c-cash', type: 'number', min: '0', step: '100', 'aria-label': t('cash.received'), placeholder: (total() / 100).toFixed(0) });
    const change = h('span', { id: 'c-change', class: 'muted' });
    cash.addEventListener('input', () => {
      const got = Math.round(Number(cash.value || 0) * 100);
      change.textContent = got >= total() ? `${t('cash.change')}: ${money(got - total())}` : '';
    });
    const payCash = h('button', { id: 'c-pay-cash', class: 'big', disabled: !cart.length, onclick: () => pay([{ method: 'cash', amount: total() }], payCash) }, `${t('cash.payCash')} ${money(total())}`);
    clear(payBox, h('h2', {}, t('cash.payment')),
      h('div', { class: 'row' }, h('label', { for: 'c-cash' }, t('cash.received')), cash, change),
      payCash,
      // ---- Slot: Payme / Click QR. Active when the server documents /api/v1/payments.
      h('div', { class: 'slot', id: 'c-qr-slot' },
        ['payme', 'click'].map((p) => h('button', {
          class: 'secondary', id: `c-pay-${p}`, disabled: !features.payments || !cart.length,
          title: features.payments ? '' : t('pay.unavailable'),
          onclick: () => qrPay(p),
        }, t(`pay.${p}`))),
        !features.payments ? h('div', { class: 'small muted', id: 'payments-unavailable' }, t('pay.unavailable')) : null,
        h('div', { id: 'c-qr' })));
  }

  async function qrPay(provider) {
    const box = payBox.querySelector('#c-qr');
    try {
      const p = await api.post('/payments', { provider, amount: total(), store_id: storeSel.value, terminal_id: tillSel.value }, { 'Idempotency-Key': uuid() });
      const img = h('img', { alt: t('pay.qrAlt', { provider }), width: '200', height: '200' });
      clear(box, h('p', {}, t('pay.scan')), img,
        h('div', {}, h('a', { id: 'c-qr-link', href: p.checkout_url, target: '_blank', rel: 'noopener', class: 'small' }, p.checkout_url)),
        h('div', { id: 'c-qr-status' }, badge(p.status || 'pending', 'warn')));
      img.src = await api.blobUrl(`/payments/${p.id}/qr.svg`);
      const poll = async (n) => {
        if (!alive || n > 300) return;
        const cur = await api.get(`/payments/${p.id}`).catch(() => null);
        if (cur && ['paid', 'completed', 'succeeded'].includes(cur.status)) {
          clear(box.querySelector('#c-qr-status'), badge(t('pay.paid'), 'ok'));
          return pay([{ method: provider, amount: total(), payment_id: p.id }]);
        }
        if (cur && ['cancelled', 'failed', 'expired'].includes(cur.status)) return clear(box.querySelector('#c-qr-status'), badge(cur.status, 'bad'));
        later(() => poll(n + 1), 1000);
      };
      poll(0);
    } catch (e) {
      clear(box, h('p', { class: 'error' }, e.message));
    }
  }

  async function pay(payments, button) {
    if (!cart.length) return;
    if (!tillSel.value) return say(t('cash.noTill'), 'warn');
    if (button) button.disabled = true;
    pendingId = pendingId || uuid();
    const body = {
      id: pendingId, store_id: storeSel.value, terminal_id: tillSel.value,
      lines: cart.map((l) => {
        const line = { product_id: l.product.id, qty: l.qty };
        if (l.codes.length) line.marking_codes = l.codes;
        // The quote's discounts are applied by the server from `loyalty.quote_id`.
        return line;
      }),
      payments,
    };
    if (customer) body.customer_id = customer.id;
    if (quote) body.loyalty = { quote_id: quote.id, spend_points: 0 };
    try {
      const r = await api.post('/receipts', body);
      pendingId = null;
      cart.length = 0;
      customer = null;
      loyaltyDown = false;
      quote = null;
      say('');
      drawCart();
      showReceipt(r, 0);
    } catch (e) {
      say([e.message, ...e.fields()].join('; '));
      if (button) button.disabled = false;
    }
  }

  async function showReceipt(r, n) {
    if (!alive) return;
    const f = r.fiscal || {};
    const qrBox = h('div', { id: 'fiscal-qr' });
    clear(receiptBox, h('h2', {}, t('rc.title', { n: r.number ?? '' })),
      h('div', { class: 'small muted' }, time(r.sold_at || r.created_at), ' · ', h('span', { class: 'mono', id: 'rc-id' }, r.id)),
      h('table', { class: 'grid small' }, h('tbody', {}, (r.lines || []).map((l) => h('tr', {},
        h('td', {}, l.name), h('td', { class: 'num' }, `${l.qty} × ${money(l.price)}`), h('td', { class: 'num' }, money(l.amount)))))),
      h('p', {}, h('strong', {}, `${t('cash.total')}: ${money(r.total)}`), h('span', { class: 'muted' }, ` · ${t('rc.vat')}: ${money(r.vat_total)}`),
        r.discount_total ? h('span', {}, ` · ${t('loy.discount')}: ${money(r.discount_total)}`) : null),
      r.loyalty ? h('p', { class: 'small', id: 'c-receipt-loyalty' },
        `${t('loy.title')}: ${t('loy.discount')} ${money(r.loyalty.discount_total || 0)}`
        + (r.loyalty.points_spent ? ` · −${r.loyalty.points_spent}` : '')
        + (r.loyalty.balance != null ? ` · ${t('loy.balance')} ${r.loyalty.balance}` : '')
        + (r.loyalty.accrual ? ` · ${r.loyalty.accrual}` : '')) : null,
      (r.warnings || []).length ? h('div', { class: 'notice warn small' }, r.warnings.map((w) => h('div', {}, typeof w === 'string' ? w : (w.message || JSON.stringify(w))))) : null,
      h('div', { id: 'fiscal-status' }, `${t('rc.fiscal')}: `, f.status ? badge(t(`st.${f.status}`, {}, f.status), kindOf(f.status)) : badge(t('rc.noFiscal'), 'muted'),
        f.fiscal_sign ? h('span', { class: 'mono small' }, ` ${t('rc.sign')}: ${f.fiscal_sign}`) : null),
      qrBox);
    if (f.qr_url) {
      try {
        const src = await api.blobUrl(`/receipts/${r.id}/fiscal-qr.svg`);
        qrBox.append(h('img', { src, alt: t('rc.qrAlt'), width: '200', height: '200', id: 'fiscal-qr-img' }),
          h('div', {}, h('a', { href: f.qr_url, target: '_blank', rel: 'noopener noreferrer', class: 'small' }, t('rc.check'))));
      } catch (e) {
        qrBox.append(h('p', { class: 'error' }, e.message));
      }
      return;
    }
    // Fiscalization runs after the sale; look again for a while.
    if (n < 20 && (!f.status || ['pending', 'queued', 'sent', 'registering'].includes(f.status))) {
      later(async () => { const fresh = await api.get(`/receipts/${r.id}`).catch(() => null); if (fresh) showReceipt(fresh, n + 1); }, 1000);
    }
  }

  init().catch((e) => say(e.message));
  return () => { alive = false; for (const id of timers) clearTimeout(id); };
}

function lineAmount(l) {
  return Math.round(l.product.price * l.qty);
}
