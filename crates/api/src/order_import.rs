//! Manual import of online orders from CSV or a JSON array. Each order becomes an outgoing
//! invoice keyed by its `external_ref`, so importing the same file again changes nothing.
//! `POST /api/v1/invoices/import` and `savdo import orders` both run this module: [`parse`]
//! checks the whole file (header, size) and every row's own values, [`import`] resolves stores
//! and products within the tenant and creates the invoices one order at a time, so a bad order
//! is reported and the others are imported. The format is documented in `docs/import.md`.

use std::collections::HashMap;

use savdo_domain::Qty;
use savdo_domain::phone::normalize_phone;
use savdo_storage::{
    Actor, CustomerFilter, FieldError, InvoiceFilter, NewInvoice, ProductFilter, Storage,
    StorageError, Store,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

/// The CSV columns, as the header names them (any order, case-insensitive).
pub const CSV_COLUMNS: [&str; 10] = [
    "external_ref",
    "store",
    "sku",
    "barcode",
    "product_id",
    "qty",
    "price",
    "channel",
    "customer_phone",
    "note",
];

const MAX_LINES_PER_ORDER: usize = 1000;
const MAX_REF: usize = 200;
const MAX_CHANNEL: usize = 64;
const MAX_NOTE: usize = 1000;
const MAX_CODE: usize = 200;

/// How the orders are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    /// `text/csv` or `application/json` (parameters such as `charset` aside).
    pub fn from_content_type(ct: &str) -> Option<Format> {
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "text/csv" | "application/csv" => Some(Format::Csv),
            "application/json" => Some(Format::Json),
            m if m.ends_with("+json") => Some(Format::Json),
            _ => None,
        }
    }
}

/// Bounds on one import.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    /// CSV rows, or JSON orders and their lines.
    pub max_rows: usize,
}

impl Limits {
    /// One HTTP request: the API's body limit, and rows that finish within a request's time.
    pub const HTTP: Limits = Limits {
        max_bytes: crate::extract::MAX_BODY,
        max_rows: 10_000,
    };
    /// A file on the command line.
    pub const FILE: Limits = Limits {
        max_bytes: 64 * 1024 * 1024,
        max_rows: 500_000,
    };
}

/// A problem with the whole import; problems of single orders go into the report instead.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the import is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Malformed(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl ImportError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ImportError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::TooLarge(n) => ApiError::TooLarge(n),
            ImportError::Malformed(m) => ApiError::MalformedBody(m),
            ImportError::Invalid { field, message } => ApiError::field(field, message),
        }
    }
}

// ----- the report -----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RowStatus {
    /// A new invoice.
    Created,
    /// An invoice with this `external_ref` exists already; nothing changed.
    Duplicate,
    /// Not imported; `errors` say why.
    Failed,
}

/// Why an order was not imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RowError {
    /// CSV: the line of the file at fault (an order may span several lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// The CSV column, or the JSON path within the order (`lines[1].qty`).
    pub field: String,
    pub message: String,
}

/// The outcome of one order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RowReport {
    /// CSV: the line of the order's first row (the header is line 1). JSON: the index of the
    /// order in the array, from 0.
    pub row: u64,
    pub external_ref: Option<String>,
    pub status: RowStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RowError>,
}

/// Orders by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportSummary {
    pub created: u64,
    pub duplicate: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    pub summary: ImportSummary,
    /// One entry per order, in the order of the file.
    pub rows: Vec<RowReport>,
}

// ----- the JSON form -----

/// One order of a JSON import.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportOrder {
    /// The order's id at its source, unique per tenant (`uzum:1234`, `site-5531`).
    pub external_ref: String,
    /// The store that ships the order.
    pub store_id: Option<Uuid>,
    /// Instead of `store_id`: the store's id or its name.
    pub store: Option<String>,
    /// Where the order came from (`site`, `telegram`, …).
    pub channel: Option<String>,
    /// The buyer's phone: the customer with this phone is attached; otherwise it goes into
    /// the note.
    pub customer_phone: Option<String>,
    pub note: Option<String>,
    pub lines: Vec<ImportLine>,
}

/// One line of a JSON order: the product by `sku`, `barcode` or `product_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportLine {
    pub sku: Option<String>,
    pub barcode: Option<String>,
    pub product_id: Option<Uuid>,
    #[schema(value_type = f64)]
    pub qty: Qty,
    /// Price per unit in tiyin (as everywhere in the JSON API); the product's price when absent.
    pub price: Option<i64>,
}

// ----- parsed orders -----

/// An order-level value and the CSV line it was read from.
#[derive(Debug, Clone)]
struct Val {
    text: String,
    row: Option<u64>,
    field: &'static str,
}

#[derive(Debug, Clone)]
struct LineInput {
    /// CSV line; `None` in JSON.
    row: Option<u64>,
    /// `lines[i].` in JSON, empty in CSV.
    prefix: String,
    sku: Option<String>,
    barcode: Option<String>,
    product_id: Option<Uuid>,
    qty: Qty,
    price: Option<i64>,
}

impl LineInput {
    fn err(&self, field: &str, message: impl Into<String>) -> RowError {
        RowError {
            row: self.row,
            field: format!("{}{field}", self.prefix),
            message: message.into(),
        }
    }
    /// The column that named the product, for errors about it.
    fn product_field(&self) -> &'static str {
        if self.sku.is_some() {
            "sku"
        } else if self.barcode.is_some() {
            "barcode"
        } else {
            "product_id"
        }
    }
}

/// One order as read from the file, with the problems found in its own values.
#[derive(Debug, Clone)]
pub struct OrderInput {
    row: u64,
    csv: bool,
    external_ref: Option<String>,
    store: Option<Val>,
    channel: Option<Val>,
    customer_phone: Option<Val>,
    note: Option<Val>,
    lines: Vec<LineInput>,
    errors: Vec<RowError>,
}

impl OrderInput {
    fn new(row: u64, csv: bool) -> OrderInput {
        OrderInput {
            row,
            csv,
            external_ref: None,
            store: None,
            channel: None,
            customer_phone: None,
            note: None,
            lines: Vec::new(),
            errors: Vec::new(),
        }
    }
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> RowError {
        RowError {
            row: self.csv.then_some(self.row),
            field: field.into(),
            message: message.into(),
        }
    }
    fn val_err(&self, v: &Option<Val>, field: &str, message: impl Into<String>) -> RowError {
        match v {
            Some(v) => RowError {
                row: v.row,
                field: v.field.to_string(),
                message: message.into(),
            },
            None => self.err(field, message),
        }
    }
    /// A storage error's field (`lines[2].qty`, `store_id`) in this order's terms.
    fn map_field(&self, e: FieldError) -> RowError {
        if let Some(rest) = e.field.strip_prefix("lines[")
            && let Some((i, tail)) = rest.split_once("].")
            && let Some(l) = i.parse::<usize>().ok().and_then(|i| self.lines.get(i))
        {
            let field = if tail == "product_id" {
                l.product_field()
            } else {
                tail
            };
            return l.err(field, e.message);
        }
        match e.field.as_str() {
            "store_id" => self.val_err(&self.store, "store", e.message),
            "customer_id" => self.val_err(&self.customer_phone, "customer_phone", e.message),
            "" => self.err("order", e.message),
            f => self.err(f, e.message),
        }
    }
}

/// The orders of one file, checked for everything that needs no database.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub orders: Vec<OrderInput>,
}

impl Parsed {
    pub fn len(&self) -> usize {
        self.orders.len()
    }
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }
}

/// Read a whole import. Whole-file problems are errors; problems of single rows are kept
/// with their orders for the report.
pub fn parse(format: Format, body: &[u8], limits: &Limits) -> Result<Parsed, ImportError> {
    if body.len() > limits.max_bytes {
        return Err(ImportError::TooLarge(limits.max_bytes));
    }
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let orders = match format {
        Format::Csv => parse_csv(body, limits)?,
        Format::Json => parse_json(body, limits)?,
    };
    Ok(Parsed { orders })
}

// ----- CSV -----

/// The delimiter of a header line: `;` or `,`, whichever separates it (outside quotes).
fn detect_delimiter(header: &str) -> Option<u8> {
    let (mut semi, mut comma, mut quoted) = (0, 0, false);
    for c in header.chars() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => semi += 1,
            ',' if !quoted => comma += 1,
            _ => {}
        }
    }
    match (semi, comma) {
        (0, 0) => None,
        (s, c) if s >= c => Some(b';'),
        _ => Some(b','),
    }
}

/// Column positions by [`CSV_COLUMNS`] index.
struct Columns {
    pos: [Option<usize>; CSV_COLUMNS.len()],
    width: usize,
}

const EXTERNAL_REF: usize = 0;
const STORE: usize = 1;
const SKU: usize = 2;
const BARCODE: usize = 3;
const PRODUCT_ID: usize = 4;
const QTY: usize = 5;
const PRICE: usize = 6;
const CHANNEL: usize = 7;
const CUSTOMER_PHONE: usize = 8;
const NOTE: usize = 9;

impl Columns {
    fn from_header(header: &csv::StringRecord) -> Result<Columns, ImportError> {
        let mut pos = [None; CSV_COLUMNS.len()];
        for (i, raw) in header.iter().enumerate() {
            let name = raw.trim().to_lowercase();
            let key = if name == "store_id" { "store" } else { &name };
            if name.is_empty() {
                return Err(ImportError::invalid(
                    "header",
                    format!("column {} of the header has no name", i + 1),
                ));
            }
            let Some(k) = CSV_COLUMNS.iter().position(|c| *c == key) else {
                return Err(ImportError::invalid(
                    raw.trim(),
                    format!(
                        "unknown column {:?} (column {}); the columns are: {}",
                        raw.trim(),
                        i + 1,
                        CSV_COLUMNS.join(", ")
                    ),
                ));
            };
            if pos[k].is_some() {
                return Err(ImportError::invalid(
                    raw.trim(),
                    format!("column {:?} appears twice in the header", raw.trim()),
                ));
            }
            pos[k] = Some(i);
        }
        for k in [EXTERNAL_REF, STORE, QTY] {
            if pos[k].is_none() {
                return Err(ImportError::invalid(
                    CSV_COLUMNS[k],
                    format!("the header has no {} column", CSV_COLUMNS[k]),
                ));
            }
        }
        if pos[SKU].is_none() && pos[BARCODE].is_none() && pos[PRODUCT_ID].is_none() {
            return Err(ImportError::invalid(
                "sku",
                "the header needs a sku, barcode or product_id column",
            ));
        }
        Ok(Columns {
            pos,
            width: header.len(),
        })
    }

    fn get<'r>(&self, rec: &'r csv::StringRecord, k: usize) -> Option<&'r str> {
        self.pos[k]
            .and_then(|i| rec.get(i))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

fn parse_csv(body: &[u8], limits: &Limits) -> Result<Vec<OrderInput>, ImportError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ImportError::invalid(
            "body",
            format!(
                "is not UTF-8 text (at byte {}): save the file as \"CSV UTF-8\"",
                e.valid_up_to()
            ),
        )
    })?;
    // Excel's hint line `sep=;` names the delimiter and is not the header.
    let first = text.lines().next().unwrap_or("");
    let (text, line_offset, hinted) = match first.trim().strip_prefix("sep=") {
        Some(d) if d.len() == 1 && (d == ";" || d == ",") => {
            let rest = text.split_once('\n').map(|x| x.1).unwrap_or("");
            (rest, 1, Some(d.as_bytes()[0]))
        }
        _ => (text, 0, None),
    };
    let header_line = text.lines().next().unwrap_or("");
    if header_line.trim().is_empty() {
        return Err(ImportError::invalid(
            "header",
            format!(
                "the first line must be the header, e.g. {}",
                CSV_COLUMNS.join(";")
            ),
        ));
    }
    let delimiter = match hinted.or_else(|| detect_delimiter(header_line)) {
        Some(d) => d,
        None => {
            return Err(ImportError::invalid(
                "header",
                "columns must be separated by \";\" or \",\"",
            ));
        }
    };
    // Russian-locale Excel writes `;` between columns and a comma before the decimals.
    let decimal_comma = delimiter == b';';
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = rdr.records();
    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(ImportError::invalid("header", csv_message(&e))),
        None => return Err(ImportError::invalid("header", "the file is empty")),
    };
    let cols = Columns::from_header(&header)?;

    let mut orders: Vec<OrderInput> = Vec::new();
    let mut by_ref: HashMap<String, usize> = HashMap::new();
    let mut rows = 0usize;
    let mut lines = LineCounter::new(text, line_offset);
    for rec in records {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = lines.at(e.position());
                rows += 1;
                if rows > limits.max_rows {
                    return Err(too_many(limits));
                }
                let mut o = OrderInput::new(line, true);
                o.errors.push(RowError {
                    row: Some(line),
                    field: "row".into(),
                    message: csv_message(&e),
                });
                orders.push(o);
                continue;
            }
        };
        // Spreadsheets leave rows of empty cells behind.
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        rows += 1;
        if rows > limits.max_rows {
            return Err(too_many(limits));
        }
        let line = lines.at(rec.position());
        read_row(&cols, &rec, line, decimal_comma, &mut orders, &mut by_ref);
    }
    Ok(orders)
}

/// Line numbers of records. The reader's own count is one short after a CRLF (it sees the
/// `\n` only when the next record starts), so lines are counted from byte offsets instead.
struct LineCounter<'t> {
    text: &'t [u8],
    offset: usize,
    line: u64,
}

impl<'t> LineCounter<'t> {
    fn new(text: &'t str, first_line: u64) -> Self {
        LineCounter {
            text: text.as_bytes(),
            offset: 0,
            line: first_line + 1,
        }
    }

    /// The line a record at this position starts on (records come in file order).
    fn at(&mut self, pos: Option<&csv::Position>) -> u64 {
        let Some(pos) = pos else { return self.line };
        let mut start = usize::try_from(pos.byte())
            .unwrap_or(usize::MAX)
            .min(self.text.len());
        while start < self.text.len() && matches!(self.text[start], b'\r' | b'\n') {
            start += 1;
        }
        if start > self.offset {
            let newlines = self.text[self.offset..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            self.line += newlines as u64;
            self.offset = start;
        }
        self.line
    }
}

fn too_many(limits: &Limits) -> ImportError {
    ImportError::invalid(
        "body",
        format!(
            "more than {} rows in one import: split the file",
            limits.max_rows
        ),
    )
}

fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "is not UTF-8 text".to_string(),
        _ => {
            let m = e.to_string();
            // Positions are reported separately.
            match m.find(": ") {
                Some(i) if m.starts_with("CSV") => m[i + 2..].to_string(),
                _ => m,
            }
        }
    }
}

/// One CSV row: a new order or one more line of an order seen before.
fn read_row(
    cols: &Columns,
    rec: &csv::StringRecord,
    line: u64,
    decimal_comma: bool,
    orders: &mut Vec<OrderInput>,
    by_ref: &mut HashMap<String, usize>,
) {
    let mut errors = Vec::new();
    let mut err = |field: &str, message: String| {
        errors.push(RowError {
            row: Some(line),
            field: field.to_string(),
            message,
        })
    };
    if rec.len() > cols.width && rec.iter().skip(cols.width).any(|f| !f.trim().is_empty()) {
        err(
            "row",
            format!("has {} fields, the header has {}", rec.len(), cols.width),
        );
    }
    let external_ref = match cols.get(rec, EXTERNAL_REF) {
        None => {
            err("external_ref", "is required".into());
            None
        }
        Some(s) => match text(s, MAX_REF, false) {
            Ok(t) => Some(t),
            Err(m) => {
                err("external_ref", m);
                None
            }
        },
    };
    let val = |k: usize, max: usize, multiline: bool, errs: &mut dyn FnMut(&str, String)| {
        cols.get(rec, k)
            .and_then(|s| match text(s, max, multiline) {
                Ok(t) => Some(Val {
                    text: t,
                    row: Some(line),
                    field: CSV_COLUMNS[k],
                }),
                Err(m) => {
                    errs(CSV_COLUMNS[k], m);
                    None
                }
            })
    };
    let store = val(STORE, MAX_CODE, false, &mut err);
    let channel = val(CHANNEL, MAX_CHANNEL, false, &mut err);
    let note = val(NOTE, MAX_NOTE, true, &mut err);
    let customer_phone = cols
        .get(rec, CUSTOMER_PHONE)
        .and_then(|s| match normalize_phone(s) {
            Ok(p) => Some(Val {
                text: p,
                row: Some(line),
                field: "customer_phone",
            }),
            Err(e) => {
                err("customer_phone", e.to_string());
                None
            }
        });
    let code = |k: usize, errs: &mut dyn FnMut(&str, String)| {
        cols.get(rec, k)
            .and_then(|s| match text(s, MAX_CODE, false) {
                Ok(t) => Some(t),
                Err(m) => {
                    errs(CSV_COLUMNS[k], m);
                    None
                }
            })
    };
    let sku = code(SKU, &mut err);
    let barcode = code(BARCODE, &mut err);
    let product_id = cols
        .get(rec, PRODUCT_ID)
        .and_then(|s| match Uuid::parse_str(s) {
            Ok(id) => Some(id),
            Err(_) => {
                err("product_id", "is not a UUID".into());
                None
            }
        });
    let named = sku.is_some() || barcode.is_some() || product_id.is_some();
    let any_product_column_bad = errors
        .iter()
        .any(|e| matches!(e.field.as_str(), "sku" | "barcode" | "product_id"));
    if !named && !any_product_column_bad {
        let f = [SKU, BARCODE, PRODUCT_ID]
            .into_iter()
            .find(|k| cols.pos[*k].is_some())
            .map(|k| CSV_COLUMNS[k])
            .unwrap_or("sku");
        errors.push(RowError {
            row: Some(line),
            field: f.into(),
            message: "the product is required: give its sku, barcode or product_id".into(),
        });
    }
    let mut err = |field: &str, message: String| {
        errors.push(RowError {
            row: Some(line),
            field: field.to_string(),
            message,
        })
    };
    let qty = match cols.get(rec, QTY) {
        None => {
            err("qty", "is required".into());
            None
        }
        Some(s) => match parse_qty(s, decimal_comma) {
            Ok(q) => Some(q),
            Err(m) => {
                err("qty", m);
                None
            }
        },
    };
    let price = match cols.get(rec, PRICE) {
        None => None,
        Some(s) => match parse_sum(s, decimal_comma) {
            Ok(p) => Some(p),
            Err(m) => {
                err("price", m);
                None
            }
        },
    };

    let Some(ext) = external_ref else {
        let mut o = OrderInput::new(line, true);
        o.errors = errors;
        orders.push(o);
        return;
    };
    let idx = *by_ref.entry(ext.clone()).or_insert_with(|| {
        let mut o = OrderInput::new(line, true);
        o.external_ref = Some(ext.clone());
        orders.push(o);
        orders.len() - 1
    });
    let o = &mut orders[idx];
    o.errors.extend(errors);
    for (slot, v) in [
        (&mut o.store, store),
        (&mut o.channel, channel),
        (&mut o.customer_phone, customer_phone),
        (&mut o.note, note),
    ] {
        let Some(v) = v else { continue };
        match slot {
            None => *slot = Some(v),
            // Store names are matched case-insensitively, so they are compared that way.
            Some(first) if !same_value(first, &v) => o.errors.push(RowError {
                row: Some(line),
                field: v.field.into(),
                message: format!(
                    "differs from line {} of the same order ({:?}); an order has one {}",
                    first.row.unwrap_or(0),
                    first.text,
                    v.field
                ),
            }),
            Some(_) => {}
        }
    }
    if o.lines.len() >= MAX_LINES_PER_ORDER {
        o.errors.push(RowError {
            row: Some(line),
            field: "external_ref".into(),
            message: format!("an order has at most {MAX_LINES_PER_ORDER} lines"),
        });
        return;
    }
    if let Some(qty) = qty {
        o.lines.push(LineInput {
            row: Some(line),
            prefix: String::new(),
            sku,
            barcode,
            product_id,
            qty,
            price,
        });
    }
}

fn same_value(a: &Val, b: &Val) -> bool {
    if a.field == "store" {
        a.text.to_lowercase() == b.text.to_lowercase()
    } else {
        a.text == b.text
    }
}

/// A text cell: trimmed, at most `max` characters, no control characters (a note may have
/// line breaks and tabs).
fn text(s: &str, max: usize, multiline: bool) -> Result<String, String> {
    let t = s.trim();
    if t.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if t.chars()
        .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')))
    {
        return Err("must not contain control characters".into());
    }
    Ok(t.to_string())
}

/// Decimal text in the form [`Qty::parse`] reads: digit groups separated by spaces
/// (`1 250`) are joined, and with a decimal comma `2,5` becomes `2.5`.
fn plain_decimal(s: &str, decimal_comma: bool) -> Result<String, String> {
    const NOT_A_NUMBER: &str = "is not a number";
    let s = s.trim();
    let dec = if decimal_comma && !s.contains('.') {
        ','
    } else {
        '.'
    };
    if s.matches(dec).count() > 1 {
        return Err(NOT_A_NUMBER.into());
    }
    if !decimal_comma && s.contains(',') {
        return Err(format!("{NOT_A_NUMBER}: use a dot before the decimals"));
    }
    let (int, frac) = s.split_once(dec).unwrap_or((s, ""));
    let (sign, int) = match int.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", int),
    };
    let groups: Vec<&str> = int.split([' ', '\u{a0}', '\u{202f}']).collect();
    let grouped_ok = groups.len() == 1
        || (!groups[0].is_empty()
            && groups[0].len() <= 3
            && groups[1..].iter().all(|g| g.len() == 3));
    if !grouped_ok {
        return Err(NOT_A_NUMBER.into());
    }
    let int: String = groups.concat();
    if frac.is_empty() && s.ends_with(dec) {
        return Err(NOT_A_NUMBER.into());
    }
    Ok(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

fn parse_qty(s: &str, decimal_comma: bool) -> Result<Qty, String> {
    let q = Qty::parse(&plain_decimal(s, decimal_comma)?).map_err(|e| e.to_string())?;
    if !q.is_positive() {
        return Err("must be greater than zero".into());
    }
    Ok(q)
}

/// A price in sum with at most two decimals, as integer tiyin (`12500,50` → `1250050`).
fn parse_sum(s: &str, decimal_comma: bool) -> Result<i64, String> {
    let t = plain_decimal(s, decimal_comma)?;
    if t.starts_with('-') {
        return Err("must not be negative".into());
    }
    let (int, frac) = t.split_once('.').unwrap_or((&t, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("is not a number".into());
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 2 {
        return Err("must have at most 2 decimals (the price is in sum)".into());
    }
    let int = int.trim_start_matches('0');
    // A trillion sum is far beyond any price and keeps tiyin inside i64 with room to spare.
    if int.len() > 12 {
        return Err("is out of range".into());
    }
    let units: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| "is out of range".to_string())?
    };
    let tiyin: i64 = format!("{frac:0<2}")
        .parse()
        .map_err(|_| "is not a number".to_string())?;
    units
        .checked_mul(100)
        .and_then(|u| u.checked_add(tiyin))
        .ok_or_else(|| "is out of range".to_string())
}

// ----- JSON -----

fn parse_json(body: &[u8], limits: &Limits) -> Result<Vec<OrderInput>, ImportError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ImportError::Malformed(e.to_string()))?;
    let serde_json::Value::Array(items) = v else {
        return Err(ImportError::invalid(
            "body",
            "must be a JSON array of orders",
        ));
    };
    let lines: usize = items
        .iter()
        .map(|o| {
            o.get("lines")
                .and_then(|l| l.as_array())
                .map_or(0, Vec::len)
        })
        .sum();
    if items.len() > limits.max_rows || lines > limits.max_rows {
        return Err(ImportError::invalid(
            "body",
            format!(
                "more than {} orders or lines in one import: split it",
                limits.max_rows
            ),
        ));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let mut o = OrderInput::new(i as u64, false);
        o.external_ref = item
            .get("external_ref")
            .and_then(|v| v.as_str())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let bytes = serde_json::to_vec(&item).unwrap_or_default();
        match crate::extract::parse_json::<ImportOrder>(&bytes) {
            Ok(order) => json_order(&mut o, order),
            Err(ApiError::Validation { errors, .. }) => {
                o.errors.extend(errors.into_iter().map(|e| RowError {
                    row: None,
                    field: if e.field.is_empty() {
                        "order".into()
                    } else {
                        e.field
                    },
                    message: e.message,
                }))
            }
            Err(e) => o.errors.push(o.err("order", e.to_string())),
        }
        if let Some(ext) = &o.external_ref
            && let Some(first) = seen.get(ext)
        {
            let e = o.err(
                "external_ref",
                format!("the same order is also at index {first} of this import"),
            );
            o.errors.push(e);
        } else if let Some(ext) = &o.external_ref {
            seen.insert(ext.clone(), i);
        }
        out.push(o);
    }
    Ok(out)
}

/// An optional text value of a JSON order; empty counts as absent.
fn opt_text(
    field: &'static str,
    v: Option<String>,
    max: usize,
    multiline: bool,
    errors: &mut Vec<RowError>,
) -> Option<Val> {
    match text(&v?, max, multiline) {
        Ok(t) if t.is_empty() => None,
        Ok(t) => Some(Val {
            text: t,
            row: None,
            field,
        }),
        Err(m) => {
            errors.push(RowError {
                row: None,
                field: field.into(),
                message: m,
            });
            None
        }
    }
}

fn json_order(o: &mut OrderInput, order: ImportOrder) {
    let mut errors = Vec::new();
    match text(&order.external_ref, MAX_REF, false) {
        Ok(t) if !t.is_empty() => o.external_ref = Some(t),
        Ok(_) => {
            o.external_ref = None;
            errors.push(o.err("external_ref", "must not be empty"));
        }
        Err(m) => {
            o.external_ref = None;
            errors.push(o.err("external_ref", m));
        }
    }
    o.store = match (order.store_id, order.store) {
        (Some(_), Some(_)) => {
            errors.push(o.err("store", "give store_id or store, not both"));
            None
        }
        (Some(id), None) => Some(Val {
            text: id.to_string(),
            row: None,
            field: "store_id",
        }),
        (None, s) => opt_text("store", s, MAX_CODE, false, &mut errors),
    };
    o.channel = opt_text("channel", order.channel, MAX_CHANNEL, false, &mut errors);
    o.note = opt_text("note", order.note, MAX_NOTE, true, &mut errors);
    o.customer_phone = match order.customer_phone.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => match normalize_phone(p) {
            Ok(p) => Some(Val {
                text: p,
                row: None,
                field: "customer_phone",
            }),
            Err(e) => {
                errors.push(o.err("customer_phone", e.to_string()));
                None
            }
        },
    };
    if order.lines.len() > MAX_LINES_PER_ORDER {
        errors.push(o.err(
            "lines",
            format!("an order has at most {MAX_LINES_PER_ORDER} lines"),
        ));
    }
    for (i, l) in order.lines.into_iter().enumerate() {
        let mut line = LineInput {
            row: None,
            prefix: format!("lines[{i}]."),
            sku: None,
            barcode: None,
            product_id: l.product_id,
            qty: l.qty,
            price: l.price,
        };
        for (slot, v, name) in [
            (&mut line.sku, l.sku, "sku"),
            (&mut line.barcode, l.barcode, "barcode"),
        ] {
            match v.as_deref().map(|s| text(s, MAX_CODE, false)) {
                None => {}
                Some(Ok(t)) if t.is_empty() => {}
                Some(Ok(t)) => *slot = Some(t),
                Some(Err(m)) => errors.push(RowError {
                    row: None,
                    field: format!("lines[{i}].{name}"),
                    message: m,
                }),
            }
        }
        if line.sku.is_none() && line.barcode.is_none() && line.product_id.is_none() {
            errors.push(line.err("sku", "give the product's sku, barcode or product_id"));
        }
        if !line.qty.is_positive() {
            errors.push(line.err("qty", "must be greater than zero"));
        }
        if line.price.is_some_and(|p| p < 0) {
            errors.push(line.err("price", "must not be negative"));
        }
        o.lines.push(line);
    }
    o.errors.extend(errors);
}

// ----- the import -----

#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    /// Reserve the stock of every invoice created.
    pub reserve: bool,
}

/// Create the invoices of `parsed` for the actor's tenant, one order at a time; `progress`
/// sees each order's outcome as it is known. Only a failing database stops the import (the
/// orders done so far stay done, and running the import again finishes the rest).
pub async fn import(
    storage: &dyn Storage,
    actor: &Actor,
    parsed: Parsed,
    opts: ImportOptions,
    mut progress: impl FnMut(&RowReport),
) -> Result<ImportReport, StorageError> {
    let stores = storage.list_stores(actor.tenant_id).await?;
    let mut r = Resolver {
        storage,
        actor,
        stores,
        skus: HashMap::new(),
        barcodes: HashMap::new(),
        ids: HashMap::new(),
        phones: HashMap::new(),
    };
    let mut report = ImportReport::default();
    for o in parsed.orders {
        let row = r.order(o, opts.reserve).await?;
        match row.status {
            RowStatus::Created => report.summary.created += 1,
            RowStatus::Duplicate => report.summary.duplicate += 1,
            RowStatus::Failed => report.summary.failed += 1,
        }
        progress(&row);
        report.rows.push(row);
    }
    Ok(report)
}

/// Looks things up within the tenant, remembering what it found: files repeat products.
struct Resolver<'a> {
    storage: &'a dyn Storage,
    actor: &'a Actor,
    stores: Vec<Store>,
    skus: HashMap<String, Vec<Uuid>>,
    barcodes: HashMap<String, Vec<Uuid>>,
    ids: HashMap<Uuid, bool>,
    phones: HashMap<String, Option<Uuid>>,
}

impl Resolver<'_> {
    async fn order(&mut self, o: OrderInput, reserve: bool) -> Result<RowReport, StorageError> {
        let mut rep = RowReport {
            row: o.row,
            external_ref: o.external_ref.clone(),
            status: RowStatus::Failed,
            invoice_id: None,
            errors: o.errors.clone(),
        };
        let Some(ext) = o.external_ref.clone() else {
            if rep.errors.is_empty() {
                rep.errors.push(o.err("external_ref", "is required"));
            }
            return Ok(rep);
        };
        if !rep.errors.is_empty() {
            return Ok(rep);
        }
        // Imported before: nothing to resolve and nothing changes.
        if let Some(id) = self.existing(&ext).await? {
            rep.status = RowStatus::Duplicate;
            rep.invoice_id = Some(id);
            return Ok(rep);
        }
        let store_id = match self.store(&o) {
            Ok(id) => Some(id),
            Err(e) => {
                rep.errors.push(e);
                None
            }
        };
        if o.lines.is_empty() {
            rep.errors
                .push(o.err("lines", "an order needs at least one line"));
        }
        let mut lines = Vec::with_capacity(o.lines.len());
        for l in &o.lines {
            match self.product(l).await? {
                Ok(id) => lines.push((id, l.qty, l.price)),
                Err(e) => rep.errors.push(e),
            }
        }
        let (Some(store_id), true) = (store_id, rep.errors.is_empty()) else {
            return Ok(rep);
        };
        let mut note = o.note.as_ref().map(|v| v.text.clone());
        let mut customer_id = None;
        if let Some(phone) = &o.customer_phone {
            customer_id = self.customer(&phone.text).await?;
            // No such customer: keep the phone where the shop will see it.
            if customer_id.is_none() {
                let p = format!("customer phone: {}", phone.text);
                note = Some(match note {
                    Some(n) => format!("{n}\n{p}"),
                    None => p,
                });
            }
        }
        let inv = NewInvoice {
            store_id,
            customer_id,
            channel: o.channel.as_ref().map(|v| v.text.clone()),
            external_ref: Some(ext),
            note,
            lines,
            reserve,
        };
        match self.storage.create_invoice(self.actor, &inv).await {
            Ok((invoice, created)) => {
                rep.status = if created {
                    RowStatus::Created
                } else {
                    RowStatus::Duplicate
                };
                rep.invoice_id = Some(invoice.id);
            }
            Err(StorageError::Invalid(errors)) => {
                rep.errors
                    .extend(errors.into_iter().map(|e| o.map_field(e)));
            }
            Err(StorageError::Conflict { message, field }) => rep
                .errors
                .push(o.map_field(FieldError::new(field.unwrap_or_default(), message))),
            Err(StorageError::NotFound(what)) => {
                rep.errors.push(o.err("order", format!("{what} not found")))
            }
            Err(e) => return Err(e),
        }
        Ok(rep)
    }

    async fn existing(&self, ext: &str) -> Result<Option<Uuid>, StorageError> {
        let f = InvoiceFilter {
            external_ref: Some(ext.to_string()),
            limit: 1,
            ..Default::default()
        };
        let (items, _) = self.storage.list_invoices(self.actor.tenant_id, &f).await?;
        Ok(items.first().map(|i| i.id))
    }

    /// The store by id or by name (case-insensitive; an active store wins over inactive ones).
    fn store(&self, o: &OrderInput) -> Result<Uuid, RowError> {
        let Some(v) = &o.store else {
            return Err(o.err(if o.csv { "store" } else { "store_id" }, "is required"));
        };
        let fail = |m: String| o.val_err(&o.store, "store", m);
        if let Ok(id) = Uuid::parse_str(&v.text) {
            return match self.stores.iter().find(|s| s.id == id) {
                Some(s) => Ok(s.id),
                None => Err(fail("no such store".into())),
            };
        }
        let name = v.text.to_lowercase();
        let named: Vec<&Store> = self
            .stores
            .iter()
            .filter(|s| s.name.trim().to_lowercase() == name)
            .collect();
        let active: Vec<&Store> = named.iter().copied().filter(|s| s.active).collect();
        match (named.as_slice(), active.as_slice()) {
            ([], _) => Err(fail(format!("no store is named {:?}", v.text))),
            ([one], _) | (_, [one]) => Ok(one.id),
            _ => Err(fail(format!(
                "{} stores are named {:?}: use the store's id",
                named.len(),
                v.text
            ))),
        }
    }

    /// The product a line names; when it names it several ways, they must agree.
    async fn product(&mut self, l: &LineInput) -> Result<Result<Uuid, RowError>, StorageError> {
        let tenant = self.actor.tenant_id;
        let mut found: Option<(Uuid, &str)> = None;
        let mut agree = |id: Uuid, field: &'static str| -> Result<(), RowError> {
            match found {
                Some((first, by)) if first != id => {
                    Err(l.err(field, format!("names a different product than {by}")))
                }
                Some(_) => Ok(()),
                None => {
                    found = Some((id, field));
                    Ok(())
                }
            }
        };
        if let Some(sku) = &l.sku {
            if !self.skus.contains_key(sku) {
                let f = ProductFilter {
                    sku: Some(sku.clone()),
                    limit: 2,
                    ..Default::default()
                };
                let (items, _) = self.storage.list_products(tenant, &f).await?;
                self.skus
                    .insert(sku.clone(), items.iter().map(|p| p.id).collect());
            }
            match self.skus.get(sku).map(Vec::as_slice).unwrap_or_default() {
                [id] => {
                    if let Err(e) = agree(*id, "sku") {
                        return Ok(Err(e));
                    }
                }
                [] => return Ok(Err(l.err("sku", format!("no product has SKU {sku:?}")))),
                _ => {
                    return Ok(Err(
                        l.err("sku", format!("several products have SKU {sku:?}"))
                    ));
                }
            }
        }
        if let Some(code) = &l.barcode {
            if !self.barcodes.contains_key(code) {
                let f = ProductFilter {
                    barcode: Some(code.clone()),
                    limit: 2,
                    ..Default::default()
                };
                let (items, _) = self.storage.list_products(tenant, &f).await?;
                self.barcodes
                    .insert(code.clone(), items.iter().map(|p| p.id).collect());
            }
            match self
                .barcodes
                .get(code)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                [id] => {
                    if let Err(e) = agree(*id, "barcode") {
                        return Ok(Err(e));
                    }
                }
                [] => {
                    return Ok(Err(
                        l.err("barcode", format!("no product has barcode {code:?}"))
                    ));
                }
                _ => {
                    return Ok(Err(l.err(
                        "barcode",
                        format!("several products have barcode {code:?}: use the sku"),
                    )));
                }
            }
        }
        if let Some(id) = l.product_id {
            let exists = match self.ids.get(&id) {
                Some(e) => *e,
                None => {
                    let e = match self.storage.get_product(tenant, id).await {
                        Ok(_) => true,
                        Err(StorageError::NotFound(_)) => false,
                        Err(e) => return Err(e),
                    };
                    self.ids.insert(id, e);
                    e
                }
            };
            if !exists {
                return Ok(Err(l.err("product_id", "no such product")));
            }
            if let Err(e) = agree(id, "product_id") {
                return Ok(Err(e));
            }
        }
        Ok(found
            .map(|(id, _)| id)
            .ok_or_else(|| l.err("sku", "give the product's sku, barcode or product_id")))
    }

    async fn customer(&mut self, phone: &str) -> Result<Option<Uuid>, StorageError> {
        if let Some(c) = self.phones.get(phone) {
            return Ok(*c);
        }
        let f = CustomerFilter {
            phone: Some(phone.to_string()),
            limit: 1,
            ..Default::default()
        };
        let (items, _) = self
            .storage
            .list_customers(self.actor.tenant_id, &f)
            .await?;
        let id = items.first().map(|c| c.id);
        self.phones.insert(phone.to_string(), id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_become_tiyin_exactly() {
        assert_eq!(parse_sum("12500", false), Ok(1_250_000));
        assert_eq!(parse_sum("12500.5", false), Ok(1_250_050));
        assert_eq!(parse_sum("12500,50", true), Ok(1_250_050));
        assert_eq!(parse_sum("12 500,05", true), Ok(1_250_005));
        assert_eq!(parse_sum("0.01", false), Ok(1));
        assert_eq!(parse_sum("1.100", false), Ok(110));
        assert!(parse_sum("1.001", false).is_err());
        assert!(parse_sum("12,5", false).is_err());
        assert!(parse_sum("-1", false).is_err());
        assert!(parse_sum("1 5", true).is_err());
        assert!(parse_sum("1e3", false).is_err());
        assert!(parse_sum("9999999999999", false).is_err());
    }

    #[test]
    fn quantities_are_exact() {
        assert_eq!(parse_qty("1,5", true), Ok(Qty::from_milli(1500)));
        assert_eq!(parse_qty("0.375", true), Ok(Qty::from_milli(375)));
        assert_eq!(parse_qty("1 000", true), Ok(Qty::units(1000)));
        assert!(parse_qty("1,5", false).is_err());
        assert!(parse_qty("0", false).is_err());
        assert!(parse_qty("0.0001", false).is_err());
        assert!(parse_qty("1,2,3", true).is_err());
    }

    #[test]
    fn delimiter_from_the_header() {
        assert_eq!(detect_delimiter("external_ref;store;sku;qty"), Some(b';'));
        assert_eq!(detect_delimiter("external_ref,store,sku,qty"), Some(b','));
        assert_eq!(detect_delimiter("\"a,b\";store;qty"), Some(b';'));
        assert_eq!(detect_delimiter("external_ref"), None);
    }

    #[test]
    fn rows_group_into_orders() {
        let csv = "external_ref;store;sku;qty;price\n\
                   A;Main;S1;1;10\n\
                   B;Main;S2;2,5;\n\
                   A;;S3;1;\n\
                   ;Main;S1;1;\n\
                   C;Main;S1;x;\n";
        let p = parse(Format::Csv, csv.as_bytes(), &Limits::HTTP).unwrap();
        assert_eq!(p.orders.len(), 4);
        assert_eq!(p.orders[0].lines.len(), 2);
        assert_eq!(p.orders[0].row, 2);
        assert_eq!(p.orders[1].lines[0].qty, Qty::from_milli(2500));
        assert_eq!(p.orders[2].external_ref, None);
        assert_eq!(p.orders[2].errors[0].row, Some(5));
        assert_eq!(p.orders[3].errors[0].field, "qty");
    }

    #[test]
    fn line_numbers_count_crlf_and_quoted_breaks() {
        let csv = "sep=;\r\nexternal_ref;store;sku;qty;note\r\n\
                   A;Main;S1;1;\"two\r\nlines\"\r\n\
                   \r\n\
                   B;Main;S1;x;\r\n";
        let p = parse(Format::Csv, csv.as_bytes(), &Limits::HTTP).unwrap();
        assert_eq!(p.orders[0].row, 3, "after the sep= line and the header");
        assert_eq!(p.orders[0].note.as_ref().unwrap().text, "two\r\nlines");
        assert_eq!(p.orders[1].row, 6);
        assert_eq!(p.orders[1].errors[0].row, Some(6));
    }

    #[test]
    fn header_problems_name_the_column() {
        let e = parse(Format::Csv, b"external_ref;store;sku;qtty\n", &Limits::HTTP).unwrap_err();
        assert!(
            matches!(e, ImportError::Invalid { ref field, .. } if field == "qtty"),
            "{e}"
        );
        let e = parse(Format::Csv, b"external_ref;store;sku\n", &Limits::HTTP).unwrap_err();
        assert!(
            matches!(e, ImportError::Invalid { ref field, .. } if field == "qty"),
            "{e}"
        );
    }
}
