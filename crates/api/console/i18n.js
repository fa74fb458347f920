// Every UI string, in English, Russian and Uzbek (Latin). t('key', {vars}, fallback).

const en = {
  'lang.label': 'Language', 'nav.label': 'Sections', 'nav.integrations': 'Integrations', 'nav.webhooks': 'Webhooks',
  'nav.events': 'Events', 'nav.cashier': 'Cashier', signout: 'Sign out', error: 'Error', ok: 'OK', cancel: 'Cancel',
  close: 'Close', copy: 'Copy', delete: 'Delete', refresh: 'Refresh', loading: 'Loading…',
  'signin.title': 'Sign in', 'signin.intro': 'Paste an API token (owner or manager) to open the back office.',
  'signin.token': 'API token', 'signin.remember': 'Remember on this device', 'signin.submit': 'Sign in',
  'signin.bad': 'This token is not valid.', 'signin.expired': 'The session ended: sign in again.',
  'int.unavailable': 'Integrations are not available on this server yet (the integrations API answers 404).',
  'int.connected': 'Connected', 'int.none': 'Nothing connected yet: pick a type in the catalogue.',
  'int.catalog': 'Catalogue', 'int.connect': 'Connect', 'int.test': 'Test', 'int.testing': 'Testing…',
  'int.details': 'Details', 'int.disconnect': 'Disconnect', 'int.confirmDisconnect': 'Disconnect {name}? Its credentials are deleted.',
  'int.name': 'Name', 'int.status': 'Status', 'int.health': 'Health', 'int.circuit': 'Circuit', 'int.untested': 'not tested',
  'int.log': 'Exchange log', 'int.jobs': 'Sync jobs', 'int.settings': 'Settings', 'int.mappings': 'Mappings',
  'int.credentials': 'Credentials', 'int.masked': 'Credentials are stored encrypted and never shown.',
  'int.featureMissing': 'Not available on this server.', 'int.secret': 'secret', 'int.group': 'Option',
  'int.oneGroup': 'Fill in one of the options below.',
  'cap.loyalty': 'loyalty', 'cap.payments': 'payments', 'cap.marketplace': 'marketplace', 'cap.marking': 'marking', 'cap.inbound_hooks': 'inbound hooks',
  'circuit.closed': 'closed', 'circuit.open': 'open', 'circuit.half_open': 'half-open',
  'log.status': 'Status', 'log.all': 'All', 'log.ok': 'Successful', 'log.errors': 'Errors', 'log.since': 'Since',
  'log.operation': 'Operation', 'log.request': 'Request', 'log.latency': 'Time', 'log.error': 'Error', 'log.time': 'When',
  'log.empty': 'No exchanges logged.',
  'jobs.what': 'What', 'jobs.start': 'Start sync', 'jobs.progress': 'Progress', 'jobs.errors': 'Errors', 'jobs.none': 'No sync jobs yet.',
  'jobs.stock': 'Stock', 'jobs.prices': 'Prices', 'jobs.products': 'Products', 'jobs.orders': 'Orders',
  'map.none': 'No mappings yet.',
  'st.active': 'active', 'st.failing': 'failing', 'st.disabled': 'disabled', 'st.ok': 'ok', 'st.degraded': 'degraded', 'st.down': 'down',
  'st.pending': 'pending', 'st.delivered': 'delivered', 'st.failed': 'failed', 'st.dead': 'dead', 'st.running': 'running', 'st.done': 'done',
  'st.succeeded': 'succeeded', 'st.queued': 'queued', 'st.registered': 'registered', 'st.fiscalized': 'fiscalized', 'st.cancelled': 'cancelled',
  'wh.new': 'New subscription', 'wh.url': 'URL', 'wh.events': 'Events', 'wh.description': 'Description', 'wh.create': 'Create',
  'wh.created': 'Subscription created.', 'wh.rotated': 'Secret rotated.', 'wh.secretOnce': 'Save this signing secret now: it is not shown again.',
  'wh.subscriptions': 'Subscriptions', 'wh.none': 'No subscriptions.', 'wh.secret': 'Secret', 'wh.deliveries': 'Deliveries',
  'wh.test': 'Send test', 'wh.rotate': 'Rotate secret', 'wh.enable': 'Enable', 'wh.disable': 'Disable',
  'wh.confirmDelete': 'Delete this subscription?', 'wh.failingSince': 'failing since {t}', 'wh.attempts': 'Attempts',
  'wh.response': 'Response', 'wh.next': 'next attempt', 'wh.retry': 'Retry', 'wh.noDeliveries': 'No deliveries yet.',
  'ev.filter': 'Type', 'ev.allTypes': 'All types', 'ev.pause': 'Pause', 'ev.resume': 'Resume', 'ev.none': 'No events yet.',
  'ev.updated': 'Updated', 'ev.type': 'Event', 'ev.onHand': 'on hand',
  'cash.store': 'Store', 'cash.till': 'Till', 'cash.shiftOpen': 'shift open', 'cash.shiftClosed': 'shift closed', 'cash.openShift': 'Open shift',
  'cash.fiscalOn': 'fiscal device', 'cash.fiscalOff': 'no fiscal device', 'cash.barcode': 'Barcode', 'cash.add': 'Add',
  'cash.search': 'Name or SKU', 'cash.find': 'Find', 'cash.nothing': 'Nothing found.', 'cash.notFound': 'No product with barcode {code}.',
  'cash.marked': 'marked', 'cash.scanMarking': 'Scan the marking code of “{name}” (one per unit)', 'cash.codeTwice': 'This code is already in the cart.',
  'cash.addUnit': 'Add a unit (scan its code)', 'cash.cart': 'Cart', 'cash.product': 'Product', 'cash.price': 'Price', 'cash.qty': 'Qty',
  'cash.amount': 'Amount', 'cash.total': 'Total', 'cash.empty': 'The cart is empty: scan a barcode or search.',
  'cash.payment': 'Payment', 'cash.received': 'Cash received', 'cash.change': 'Change', 'cash.payCash': 'Pay cash',
  'cash.noStores': 'No stores yet: create one through the API.', 'cash.noTill': 'Choose a till first.',
  'loy.title': 'Loyalty card', 'loy.card': 'Card number', 'loy.attach': 'Attach', 'loy.detach': 'Detach', 'loy.discount': 'Discount',
  'loy.points': 'Points', 'loy.balance': 'balance', 'loy.noCustomer': 'No customer with card {card}.',
  'loy.unavailable': 'Loyalty is unavailable: this server has no JOWi Club API yet, so no discount or points are calculated. The card still links the sale to the customer.',
  'pay.payme': 'Payme QR', 'pay.click': 'Click QR', 'pay.unavailable': 'QR payments are not available on this server yet.',
  'pay.scan': 'Ask the customer to scan:', 'pay.paid': 'paid', 'pay.qrAlt': '{provider} payment QR code',
  'rc.title': 'Receipt № {n}', 'rc.vat': 'VAT', 'rc.fiscal': 'Fiscal', 'rc.noFiscal': 'not fiscalized', 'rc.sign': 'sign',
  'rc.qrAlt': 'QR code of the fiscal receipt', 'rc.check': 'Check on ofd.soliq.uz',
};

const ru = {
  'lang.label': 'Язык', 'nav.label': 'Разделы', 'nav.integrations': 'Интеграции', 'nav.webhooks': 'Вебхуки',
  'nav.events': 'События', 'nav.cashier': 'Касса', signout: 'Выйти', error: 'Ошибка', ok: 'OK', cancel: 'Отмена',
  close: 'Закрыть', copy: 'Копировать', delete: 'Удалить', refresh: 'Обновить', loading: 'Загрузка…',
  'signin.title': 'Вход', 'signin.intro': 'Вставьте API-токен (владельца или менеджера), чтобы открыть бэк-офис.',
  'signin.token': 'API-токен', 'signin.remember': 'Запомнить на этом устройстве', 'signin.submit': 'Войти',
  'signin.bad': 'Токен недействителен.', 'signin.expired': 'Сеанс завершён: войдите снова.',
  'int.unavailable': 'Интеграции на этом сервере пока недоступны (API интеграций отвечает 404).',
  'int.connected': 'Подключено', 'int.none': 'Пока ничего не подключено: выберите тип в каталоге.',
  'int.catalog': 'Каталог', 'int.connect': 'Подключить', 'int.test': 'Проверить', 'int.testing': 'Проверка…',
  'int.details': 'Подробнее', 'int.disconnect': 'Отключить', 'int.confirmDisconnect': 'Отключить {name}? Учётные данные будут удалены.',
  'int.name': 'Название', 'int.status': 'Статус', 'int.health': 'Состояние', 'int.circuit': 'Предохранитель', 'int.untested': 'не проверено',
  'int.log': 'Журнал обмена', 'int.jobs': 'Синхронизация', 'int.settings': 'Настройки', 'int.mappings': 'Сопоставления',
  'int.credentials': 'Учётные данные', 'int.masked': 'Учётные данные хранятся зашифрованными и не показываются.',
  'int.featureMissing': 'Недоступно на этом сервере.', 'int.secret': 'секрет', 'int.group': 'Вариант',
  'int.oneGroup': 'Заполните один из вариантов ниже.',
  'cap.loyalty': 'лояльность', 'cap.payments': 'платежи', 'cap.marketplace': 'маркетплейс', 'cap.marking': 'маркировка', 'cap.inbound_hooks': 'входящие хуки',
  'circuit.closed': 'замкнут', 'circuit.open': 'разомкнут', 'circuit.half_open': 'полуоткрыт',
  'log.status': 'Статус', 'log.all': 'Все', 'log.ok': 'Успешные', 'log.errors': 'Ошибки', 'log.since': 'С',
  'log.operation': 'Операция', 'log.request': 'Запрос', 'log.latency': 'Время', 'log.error': 'Ошибка', 'log.time': 'Когда',
  'log.empty': 'Обменов нет.',
  'jobs.what': 'Что', 'jobs.start': 'Запустить', 'jobs.progress': 'Прогресс', 'jobs.errors': 'Ошибки', 'jobs.none': 'Заданий синхронизации нет.',
  'jobs.stock': 'Остатки', 'jobs.prices': 'Цены', 'jobs.products': 'Товары', 'jobs.orders': 'Заказы',
  'map.none': 'Сопоставлений нет.',
  'st.active': 'активна', 'st.failing': 'сбой', 'st.disabled': 'отключена', 'st.ok': 'в норме', 'st.degraded': 'с замечаниями', 'st.down': 'недоступна',
  'st.pending': 'ожидает', 'st.delivered': 'доставлено', 'st.failed': 'ошибка', 'st.dead': 'не доставлено', 'st.running': 'выполняется', 'st.done': 'готово',
  'st.succeeded': 'успешно', 'st.queued': 'в очереди', 'st.registered': 'зарегистрирован', 'st.fiscalized': 'фискализирован', 'st.cancelled': 'отменено',
  'wh.new': 'Новая подписка', 'wh.url': 'URL', 'wh.events': 'События', 'wh.description': 'Описание', 'wh.create': 'Создать',
  'wh.created': 'Подписка создана.', 'wh.rotated': 'Секрет заменён.', 'wh.secretOnce': 'Сохраните секрет подписи сейчас: он больше не будет показан.',
  'wh.subscriptions': 'Подписки', 'wh.none': 'Подписок нет.', 'wh.secret': 'Секрет', 'wh.deliveries': 'Доставки',
  'wh.test': 'Тест', 'wh.rotate': 'Сменить секрет', 'wh.enable': 'Включить', 'wh.disable': 'Выключить',
  'wh.confirmDelete': 'Удалить подписку?', 'wh.failingSince': 'сбои с {t}', 'wh.attempts': 'Попытки',
  'wh.response': 'Ответ', 'wh.next': 'следующая попытка', 'wh.retry': 'Повторить', 'wh.noDeliveries': 'Доставок пока нет.',
  'ev.filter': 'Тип', 'ev.allTypes': 'Все типы', 'ev.pause': 'Пауза', 'ev.resume': 'Продолжить', 'ev.none': 'Событий пока нет.',
  'ev.updated': 'Обновлено', 'ev.type': 'Событие', 'ev.onHand': 'остаток',
  'cash.store': 'Магазин', 'cash.till': 'Касса', 'cash.shiftOpen': 'смена открыта', 'cash.shiftClosed': 'смена закрыта', 'cash.openShift': 'Открыть смену',
  'cash.fiscalOn': 'фискальный модуль', 'cash.fiscalOff': 'без фискального модуля', 'cash.barcode': 'Штрихкод', 'cash.add': 'Добавить',
  'cash.search': 'Название или артикул', 'cash.find': 'Найти', 'cash.nothing': 'Ничего не найдено.', 'cash.notFound': 'Нет товара со штрихкодом {code}.',
  'cash.marked': 'маркирован', 'cash.scanMarking': 'Отсканируйте код маркировки «{name}» (по одному на единицу)', 'cash.codeTwice': 'Этот код уже в чеке.',
  'cash.addUnit': 'Добавить единицу (отсканировать код)', 'cash.cart': 'Чек', 'cash.product': 'Товар', 'cash.price': 'Цена', 'cash.qty': 'Кол-во',
  'cash.amount': 'Сумма', 'cash.total': 'Итого', 'cash.empty': 'Чек пуст: отсканируйте штрихкод или найдите товар.',
  'cash.payment': 'Оплата', 'cash.received': 'Получено наличными', 'cash.change': 'Сдача', 'cash.payCash': 'Наличные',
  'cash.noStores': 'Магазинов нет: создайте через API.', 'cash.noTill': 'Сначала выберите кассу.',
  'loy.title': 'Карта лояльности', 'loy.card': 'Номер карты', 'loy.attach': 'Привязать', 'loy.detach': 'Убрать', 'loy.discount': 'Скидка',
  'loy.points': 'Баллы', 'loy.balance': 'баланс', 'loy.noCustomer': 'Нет покупателя с картой {card}.',
  'loy.unavailable': 'Лояльность недоступна: на этом сервере пока нет API JOWi Club, скидка и баллы не рассчитываются. Карта всё равно привязывает продажу к покупателю.',
  'pay.payme': 'Payme QR', 'pay.click': 'Click QR', 'pay.unavailable': 'Оплата по QR на этом сервере пока недоступна.',
  'pay.scan': 'Попросите покупателя отсканировать:', 'pay.paid': 'оплачено', 'pay.qrAlt': 'QR-код оплаты {provider}',
  'rc.title': 'Чек № {n}', 'rc.vat': 'НДС', 'rc.fiscal': 'Фискализация', 'rc.noFiscal': 'не фискализирован', 'rc.sign': 'признак',
  'rc.qrAlt': 'QR-код фискального чека', 'rc.check': 'Проверить на ofd.soliq.uz',
};

const uz = {
  'lang.label': 'Til', 'nav.label': 'Bo‘limlar', 'nav.integrations': 'Integratsiyalar', 'nav.webhooks': 'Vebhuklar',
  'nav.events': 'Hodisalar', 'nav.cashier': 'Kassa', signout: 'Chiqish', error: 'Xato', ok: 'OK', cancel: 'Bekor qilish',
  close: 'Yopish', copy: 'Nusxalash', delete: 'O‘chirish', refresh: 'Yangilash', loading: 'Yuklanmoqda…',
  'signin.title': 'Kirish', 'signin.intro': 'Bek-ofisni ochish uchun API tokenini (egasi yoki menejer) kiriting.',
  'signin.token': 'API token', 'signin.remember': 'Bu qurilmada eslab qolish', 'signin.submit': 'Kirish',
  'signin.bad': 'Token yaroqsiz.', 'signin.expired': 'Seans tugadi: qayta kiring.',
  'int.unavailable': 'Bu serverda integratsiyalar hali mavjud emas (integratsiyalar API 404 qaytaradi).',
  'int.connected': 'Ulangan', 'int.none': 'Hali hech narsa ulanmagan: katalogdan turini tanlang.',
  'int.catalog': 'Katalog', 'int.connect': 'Ulash', 'int.test': 'Tekshirish', 'int.testing': 'Tekshirilmoqda…',
  'int.details': 'Batafsil', 'int.disconnect': 'Uzish', 'int.confirmDisconnect': '{name} uzilsinmi? Hisob ma’lumotlari o‘chiriladi.',
  'int.name': 'Nomi', 'int.status': 'Holat', 'int.health': 'Sog‘lik', 'int.circuit': 'Saqlagich', 'int.untested': 'tekshirilmagan',
  'int.log': 'Almashuv jurnali', 'int.jobs': 'Sinxronlash', 'int.settings': 'Sozlamalar', 'int.mappings': 'Moslashtirishlar',
  'int.credentials': 'Hisob ma’lumotlari', 'int.masked': 'Hisob ma’lumotlari shifrlangan holda saqlanadi va ko‘rsatilmaydi.',
  'int.featureMissing': 'Bu serverda mavjud emas.', 'int.secret': 'maxfiy', 'int.group': 'Variant',
  'int.oneGroup': 'Quyidagi variantlardan birini to‘ldiring.',
  'cap.loyalty': 'sodiqlik', 'cap.payments': 'to‘lovlar', 'cap.marketplace': 'marketpleys', 'cap.marking': 'markirovka', 'cap.inbound_hooks': 'kiruvchi huklar',
  'circuit.closed': 'yopiq', 'circuit.open': 'ochiq', 'circuit.half_open': 'yarim ochiq',
  'log.status': 'Holat', 'log.all': 'Hammasi', 'log.ok': 'Muvaffaqiyatli', 'log.errors': 'Xatolar', 'log.since': 'Dan',
  'log.operation': 'Amal', 'log.request': 'So‘rov', 'log.latency': 'Vaqt', 'log.error': 'Xato', 'log.time': 'Qachon',
  'log.empty': 'Almashuvlar yo‘q.',
  'jobs.what': 'Nima', 'jobs.start': 'Boshlash', 'jobs.progress': 'Jarayon', 'jobs.errors': 'Xatolar', 'jobs.none': 'Sinxronlash vazifalari yo‘q.',
  'jobs.stock': 'Qoldiqlar', 'jobs.prices': 'Narxlar', 'jobs.products': 'Tovarlar', 'jobs.orders': 'Buyurtmalar',
  'map.none': 'Moslashtirishlar yo‘q.',
  'st.active': 'faol', 'st.failing': 'nosoz', 'st.disabled': 'o‘chirilgan', 'st.ok': 'yaxshi', 'st.degraded': 'qisman', 'st.down': 'ishlamayapti',
  'st.pending': 'kutilmoqda', 'st.delivered': 'yetkazildi', 'st.failed': 'xato', 'st.dead': 'yetkazilmadi', 'st.running': 'bajarilmoqda', 'st.done': 'tayyor',
  'st.succeeded': 'muvaffaqiyatli', 'st.queued': 'navbatda', 'st.registered': 'ro‘yxatga olingan', 'st.fiscalized': 'fiskallashtirilgan', 'st.cancelled': 'bekor qilingan',
  'wh.new': 'Yangi obuna', 'wh.url': 'URL', 'wh.events': 'Hodisalar', 'wh.description': 'Tavsif', 'wh.create': 'Yaratish',
  'wh.created': 'Obuna yaratildi.', 'wh.rotated': 'Maxfiy kalit almashtirildi.', 'wh.secretOnce': 'Imzo kalitini hozir saqlang: u qayta ko‘rsatilmaydi.',
  'wh.subscriptions': 'Obunalar', 'wh.none': 'Obunalar yo‘q.', 'wh.secret': 'Maxfiy kalit', 'wh.deliveries': 'Yetkazishlar',
  'wh.test': 'Sinov', 'wh.rotate': 'Kalitni almashtirish', 'wh.enable': 'Yoqish', 'wh.disable': 'O‘chirish',
  'wh.confirmDelete': 'Obuna o‘chirilsinmi?', 'wh.failingSince': '{t} dan beri xato', 'wh.attempts': 'Urinishlar',
  'wh.response': 'Javob', 'wh.next': 'keyingi urinish', 'wh.retry': 'Qayta yuborish', 'wh.noDeliveries': 'Hali yetkazishlar yo‘q.',
  'ev.filter': 'Turi', 'ev.allTypes': 'Barcha turlar', 'ev.pause': 'To‘xtatish', 'ev.resume': 'Davom etish', 'ev.none': 'Hali hodisalar yo‘q.',
  'ev.updated': 'Yangilandi', 'ev.type': 'Hodisa', 'ev.onHand': 'qoldiq',
  'cash.store': 'Do‘kon', 'cash.till': 'Kassa', 'cash.shiftOpen': 'smena ochiq', 'cash.shiftClosed': 'smena yopiq', 'cash.openShift': 'Smenani ochish',
  'cash.fiscalOn': 'fiskal modul', 'cash.fiscalOff': 'fiskal modulsiz', 'cash.barcode': 'Shtrix-kod', 'cash.add': 'Qo‘shish',
  'cash.search': 'Nomi yoki artikul', 'cash.find': 'Topish', 'cash.nothing': 'Hech narsa topilmadi.', 'cash.notFound': '{code} shtrix-kodli tovar yo‘q.',
  'cash.marked': 'markirovkali', 'cash.scanMarking': '“{name}” markirovka kodini skanerlang (har bir dona uchun bittadan)', 'cash.codeTwice': 'Bu kod allaqachon chekda.',
  'cash.addUnit': 'Dona qo‘shish (kodini skanerlash)', 'cash.cart': 'Chek', 'cash.product': 'Tovar', 'cash.price': 'Narx', 'cash.qty': 'Soni',
  'cash.amount': 'Summa', 'cash.total': 'Jami', 'cash.empty': 'Chek bo‘sh: shtrix-kodni skanerlang yoki qidiring.',
  'cash.payment': 'To‘lov', 'cash.received': 'Naqd olindi', 'cash.change': 'Qaytim', 'cash.payCash': 'Naqd to‘lash',
  'cash.noStores': 'Do‘konlar yo‘q: API orqali yarating.', 'cash.noTill': 'Avval kassani tanlang.',
  'loy.title': 'Sodiqlik kartasi', 'loy.card': 'Karta raqami', 'loy.attach': 'Biriktirish', 'loy.detach': 'Olib tashlash', 'loy.discount': 'Chegirma',
  'loy.points': 'Ballar', 'loy.balance': 'balans', 'loy.noCustomer': '{card} kartali xaridor yo‘q.',
  'loy.unavailable': 'Sodiqlik mavjud emas: bu serverda hali JOWi Club API yo‘q, chegirma va ballar hisoblanmaydi. Karta baribir sotuvni xaridorga bog‘laydi.',
  'pay.payme': 'Payme QR', 'pay.click': 'Click QR', 'pay.unavailable': 'Bu serverda QR orqali to‘lov hali mavjud emas.',
  'pay.scan': 'Xaridordan skanerlashni so‘rang:', 'pay.paid': 'to‘landi', 'pay.qrAlt': '{provider} to‘lov QR kodi',
  'rc.title': 'Chek № {n}', 'rc.vat': 'QQS', 'rc.fiscal': 'Fiskal', 'rc.noFiscal': 'fiskallashtirilmagan', 'rc.sign': 'belgi',
  'rc.qrAlt': 'Fiskal chekning QR kodi', 'rc.check': 'ofd.soliq.uz da tekshirish',
};

const DICTS = { en, ru, uz };
export const LANGS = [['ru', 'Русский'], ['uz', 'O‘zbekcha'], ['en', 'English']];
const KEY = 'savdo.lang';

let current = localStorage.getItem(KEY) || pick();

function pick() {
  const l = (navigator.language || 'ru').slice(0, 2);
  return DICTS[l] ? l : 'ru';
}

export function lang() {
  return current;
}

export function setLang(l) {
  if (!DICTS[l]) return;
  current = l;
  localStorage.setItem(KEY, l);
  document.documentElement.lang = l;
}

export function t(key, vars, fallback) {
  let s = DICTS[current][key] ?? en[key];
  if (s === undefined) return fallback !== undefined ? String(fallback) : key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replaceAll(`{${k}}`, String(v));
  return s;
}
