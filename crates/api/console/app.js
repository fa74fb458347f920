// The console shell: sign-in, navigation, language switcher; each page is its own module.

import { h, clear } from './dom.js';
import { t, lang, setLang, LANGS } from './i18n.js';
import * as api from './api.js';
import * as integrations from './integrations.js';
import * as webhooks from './webhooks.js';
import * as events from './events.js';
import * as cashier from './cashier.js';

const PAGES = {
  integrations: { title: 'nav.integrations', module: integrations },
  webhooks: { title: 'nav.webhooks', module: webhooks },
  events: { title: 'nav.events', module: events },
  cashier: { title: 'nav.cashier', module: cashier },
};

const root = document.getElementById('app');
let cleanup = null;

function stopPage() {
  if (typeof cleanup === 'function') cleanup();
  cleanup = null;
}

function langSwitcher() {
  return h('label', { class: 'lang' },
    h('span', { class: 'sr-only' }, t('lang.label')),
    h('select', {
      id: 'lang', 'aria-label': t('lang.label'),
      onchange: (e) => { setLang(e.target.value); render(); },
    }, LANGS.map(([code, name]) => h('option', { value: code, selected: code === lang() }, name))));
}

function signInPage(message) {
  stopPage();
  document.title = `${t('signin.title')} · Savdo`;
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, placeholder: 'svd_…' });
  const remember = h('input', { id: 'remember', type: 'checkbox' });
  const error = h('p', { id: 'signin-error', class: 'error', role: 'alert' }, message || '');
  const button = h('button', { type: 'submit', id: 'signin' }, t('signin.submit'));
  const form = h('form', {
    class: 'signin card',
    onsubmit: async (e) => {
      e.preventDefault();
      button.disabled = true;
      api.signIn(input.value.trim(), remember.checked);
      try {
        await api.get('/stores');
        if (!location.hash || location.hash === '#/') location.hash = '#/integrations';
        render();
      } catch (err) {
        api.signOut();
        error.textContent = err.status === 401 || err.status === 403 ? t('signin.bad') : `${t('error')}: ${err.message}`;
        button.disabled = false;
      }
    },
  },
  h('h1', {}, 'Savdo'),
  h('p', { class: 'muted' }, t('signin.intro')),
  h('label', { for: 'token' }, t('signin.token')),
  input,
  h('label', { class: 'inline' }, remember, ' ', t('signin.remember')),
  button,
  error);
  clear(root, h('header', { class: 'top' }, h('span', { class: 'brand' }, 'Savdo'), h('span', { class: 'spacer' }), langSwitcher()),
    h('main', { class: 'center' }, form));
  input.focus();
}

function currentPage() {
  const name = (location.hash.replace(/^#\/?/, '').split(/[/?]/)[0]) || 'integrations';
  return PAGES[name] ? name : 'integrations';
}

function render() {
  document.documentElement.lang = lang();
  if (!api.token()) return signInPage();
  stopPage();
  const name = currentPage();
  const page = PAGES[name];
  document.title = `${t(page.title)} · Savdo`;
  const main = h('main', { id: 'main', tabindex: '-1' });
  const nav = h('nav', { 'aria-label': t('nav.label') },
    Object.entries(PAGES).map(([key, p]) => h('a', {
      href: `#/${key}`, id: `nav-${key}`, 'aria-current': key === name ? 'page' : null,
    }, t(p.title))));
  clear(root,
    h('header', { class: 'top' },
      h('span', { class: 'brand' }, 'Savdo'),
      nav,
      h('span', { class: 'spacer' }),
      langSwitcher(),
      h('button', { id: 'signout', class: 'secondary', onclick: () => { api.signOut(); stopPage(); signInPage(); } }, t('signout'))),
    main);
  try {
    cleanup = page.module.render(main) || null;
  } catch (e) {
    clear(main, h('p', { class: 'error' }, String(e)));
  }
}

api.setUnauthorizedHandler(() => {
  api.signOut();
  signInPage(t('signin.expired'));
});
window.addEventListener('hashchange', render);
render();
