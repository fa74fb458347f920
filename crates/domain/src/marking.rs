//! GS1 DataMatrix marking codes (Asl Belgisi, which mirrors Russia's Chestny ZNAK), parsed as
//! scanners actually deliver them.
//!
//! Two shapes exist:
//! - **GS1 element strings**: `01` + GTIN-14, `21` + serial, then the crypto tail (`91` key +
//!   `92` verification code, or `93` alone in newer groups) and sometimes expiry, batch, price
//!   or weight. Variable-length fields end with GS (ASCII 29).
//! - **Tobacco pack form** without AIs: GTIN-14 + 7-char serial + 8-char verification code,
//!   29 characters, as the operator (CRPT Turon) documents it for Uzbekistan. A 25-character
//!   pack form is sometimes mentioned, but no operator document describes it, so it is rejected
//!   rather than guessed at.
//!
//! Accepted stand-ins for GS, all outside GS1 character set 82 (so they cannot occur inside a
//! field) except `<GS>`:
//! - `\x1d` itself, and `␝` (U+241D, its visible symbol);
//! - `<GS>`, the text many scanner utilities and copy-pastes produce. Its characters are legal
//!   in a serial, but no issued serial is known to contain that exact text;
//! - `^]`, caret notation of Ctrl+], the key that types GS;
//! - `↔` (U+2194), what Windows types for Alt+29 (code page 437) in keyboard emulation;
//! - a space between fields. Leading and trailing whitespace (scanner suffixes) is dropped.
//!
//! Not accepted: `~1`/`\F` (FNC1 escapes of label printers, not scanner output) and `|` or
//! other arbitrary strings some scanners can be configured to send instead of GS; set such
//! scanners to send GS or `<GS>`.
//!
//! A leading AIM symbology identifier (`]d1`, `]d2`, `]C1`, `]Q3`) and a leading GS (FNC1)
//! are dropped.
//!
//! Keyboard-emulating scanners often drop GS entirely. For the serial (the only field whose
//! boundary matters for the unit's identity) the parser then tries the serial lengths the
//! operator issues (6, 7, 13) and keeps a split only if exactly one reading makes sense; see
//! [`MarkingCode::parse`].

use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Serialize, Serializer};

use crate::barcode::{Barcode, gs1_check_digit};

/// The group separator as it appears in [`MarkingCode::raw`].
pub const GS: char = '\u{1d}';
/// Longest input accepted, in characters. Real codes stay under 150 even with `<GS>` spelled
/// out; the cap bounds the work done on garbage.
pub const MAX_INPUT_CHARS: usize = 256;
/// GS1 limit for AI 21.
pub const MAX_SERIAL_LEN: usize = 20;
/// Length of the tobacco pack form (14 + 7 + 8).
pub const TOBACCO_PACK_LEN: usize = 29;

const GS_BYTE: u8 = 0x1d;
const SYMBOLOGY_IDS: [&str; 4] = ["]d1", "]d2", "]C1", "]Q3"];
/// Serial lengths the operator issues: 6 (dairy), 7 (tobacco, beer), 13 (most other groups).
const KNOWN_SERIAL_LENS: [usize; 3] = [6, 7, 13];
/// AIs that directly follow the serial in issued codes; a split is only tried before these.
const AFTER_SERIAL: [&str; 3] = ["91", "93", "8005"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkingError {
    #[error("marking code is empty")]
    Empty,
    #[error("marking code is longer than {max} characters")]
    TooLong { max: usize },
    #[error(
        "character {ch:?} at position {position} is not printable ASCII \
         (is the scanner's keyboard layout English?)"
    )]
    NotPrintable { position: usize, ch: char },
    #[error("this is a product barcode, not a marking code: scan the DataMatrix")]
    ProductBarcode,
    #[error("the GTIN (AI 01) is missing")]
    MissingGtin,
    #[error("the GTIN must be 14 digits, found {found:?}")]
    GtinFormat { found: String },
    #[error("wrong GTIN check digit: expected {expected}, found {found}")]
    GtinCheckDigit { expected: u8, found: u8 },
    #[error("the serial number (AI 21) is missing or empty")]
    MissingSerial,
    #[error(
        "the serial number has {len} characters, at most {max} are allowed \
         (is the scanner dropping GS separators?)"
    )]
    SerialTooLong { len: usize, max: usize },
    #[error("the serial number contains {ch:?}, which is outside the GS1 character set")]
    SerialInvalidChar { ch: char },
    #[error("{field} contains {ch:?}, which that field does not allow")]
    InvalidChar { field: String, ch: char },
    #[error("AI ({ai}) is empty")]
    EmptyField { ai: String },
    #[error("AI ({ai}) has {found} characters, at most {max} are allowed")]
    FieldTooLong {
        ai: String,
        max: usize,
        found: usize,
    },
    #[error("AI ({ai}) is cut short: {expected} characters expected, {found} found")]
    Truncated {
        ai: String,
        expected: usize,
        found: usize,
    },
    #[error("AI ({ai}) must have exactly {expected} characters, found {found}")]
    FieldLength {
        ai: String,
        expected: usize,
        found: usize,
    },
    #[error("AI ({ai}) is not a valid YYMMDD date: {value:?}")]
    InvalidDate { ai: String, value: String },
    #[error("unknown or unsupported application identifier at {found:?}")]
    UnknownAi { found: String },
    #[error("AI ({ai}) appears more than once")]
    DuplicateAi { ai: String },
    #[error(
        "the GS separator after the serial is missing and the code reads more than one way; \
         set the scanner to transmit GS"
    )]
    AmbiguousSeparator,
    #[error(
        "a code without application identifiers must have {TOBACCO_PACK_LEN} characters \
         (tobacco pack), found {len}"
    )]
    ShortFormLength { len: usize },
}

/// How the code was written on the pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkingForm {
    /// GS1 element strings (`01…21…`).
    Gs1,
    /// 29 characters without AIs: GTIN-14 + 7-char serial + 8-char verification code.
    TobaccoPack,
}

/// One GS1 element string other than those [`MarkingCode`] exposes as fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Element {
    pub ai: String,
    pub value: String,
}

/// A validated marking code: the GTIN has 14 digits and a correct check digit, the serial has
/// 1 to 20 characters of GS1 set 82.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MarkingCode {
    form: MarkingForm,
    gtin: String,
    serial: String,
    crypto_key: Option<String>,
    verification_code: Option<String>,
    extra: Vec<Element>,
    /// Every element string in scan order; empty for tobacco packs.
    elements: Vec<Element>,
    raw: String,
}

impl MarkingCode {
    /// Parses a code as a scanner or a person delivered it (see the module docs for the
    /// accepted separators and prefixes).
    ///
    /// When GS is missing after the serial, every split at an issued serial length (6, 7, 13)
    /// that is followed by `91`, `93` or `8005` and parses to the end is considered alongside
    /// the literal GS1 reading. A single candidate wins; otherwise candidates with a coherent
    /// crypto tail (`91` with `92`, `93` alone) are preferred, then those whose serial has an
    /// issued length. If that still leaves several, [`MarkingError::AmbiguousSeparator`].
    pub fn parse(input: &str) -> Result<Self, MarkingError> {
        let data = normalise(input)?;
        if data.is_empty() {
            return Err(MarkingError::Empty);
        }
        let has_gs = data.contains(&GS_BYTE);
        if !has_gs && data.len() <= 14 && data.iter().all(u8::is_ascii_digit) {
            return Err(MarkingError::ProductBarcode);
        }
        let looks_short = !has_gs && data.len() >= 14 && data[..14].iter().all(u8::is_ascii_digit);
        if data.starts_with(b"01") || !looks_short {
            // A 29-char GS-less code starting with `01` may still be a pack whose GTIN starts
            // with 01; the AI reading wins because it also has to pass `21` at offset 16.
            match parse_gs1(&data) {
                Ok(code) => Ok(code),
                Err(e) if looks_short && data.len() == TOBACCO_PACK_LEN => {
                    parse_tobacco_pack(&data).map_err(|_| e)
                }
                Err(e) => Err(e),
            }
        } else {
            match parse_tobacco_pack(&data) {
                Ok(code) => Ok(code),
                Err(e) => parse_gs1(&data).map_err(|_| e),
            }
        }
    }

    pub fn form(&self) -> MarkingForm {
        self.form
    }

    /// GTIN-14, digits only.
    pub fn gtin(&self) -> &str {
        &self.gtin
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The unit's identity as GS1 element strings: `01` + GTIN + `21` + serial, the form
    /// Chestny ZNAK-style APIs call "CIS" for AI-form codes. Tobacco packs are identified there
    /// by [`label`](Self::label) instead.
    pub fn cis(&self) -> String {
        format!("01{}21{}", self.gtin, self.serial)
    }

    /// GTIN + serial without AIs (21 characters for a 7-char serial): what a fiscal receipt
    /// carries in the item's marking labels.
    pub fn label(&self) -> String {
        format!("{}{}", self.gtin, self.serial)
    }

    /// AI 91, the 4-character verification key.
    pub fn crypto_key(&self) -> Option<&str> {
        self.crypto_key.as_deref()
    }

    /// AI 92, else AI 93, else the 8-character tail of a tobacco pack. When a code carries both
    /// 92 and 93, 93 stays in [`extra`](Self::extra).
    pub fn verification_code(&self) -> Option<&str> {
        self.verification_code.as_deref()
    }

    /// `true` if the code carries the operator's verification code (needed for online checks;
    /// a bare `01…21…` typed from a document has none).
    pub fn has_crypto_tail(&self) -> bool {
        self.verification_code.is_some()
    }

    /// Other AIs (expiry, batch, price, weight…) in scan order.
    pub fn extra(&self) -> &[Element] {
        &self.extra
    }

    /// Value of any AI in the code, including 01, 21, 91, 92 and 93. `None` for tobacco packs,
    /// which have no AIs.
    pub fn ai(&self, ai: &str) -> Option<&str> {
        self.elements
            .iter()
            .find(|e| e.ai == ai)
            .map(|e| e.value.as_str())
    }

    /// Expiry date from AI 17. GS1 day `00` means the last day of the month; years are read as
    /// 20YY, which holds for every code issued before 2050.
    pub fn expiry(&self) -> Option<NaiveDate> {
        self.ai("17").and_then(yymmdd)
    }

    /// The normalised scan with real GS separators, no symbology identifier and no leading
    /// FNC1: the form to send to the operator's code check.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// `true` if `barcode` is the EAN/UPC/GTIN of the product this code marks.
    pub fn matches_barcode(&self, barcode: &Barcode) -> bool {
        barcode.gtin14().as_deref() == Some(self.gtin.as_str())
    }
}

impl FromStr for MarkingCode {
    type Err = MarkingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for MarkingCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Derived values are included so API clients need not rebuild them.
        #[derive(Serialize)]
        struct View<'a> {
            form: MarkingForm,
            gtin: &'a str,
            serial: &'a str,
            cis: String,
            label: String,
            crypto_key: Option<&'a str>,
            verification_code: Option<&'a str>,
            extra: &'a [Element],
            raw: &'a str,
        }
        View {
            form: self.form,
            gtin: &self.gtin,
            serial: &self.serial,
            cis: self.cis(),
            label: self.label(),
            crypto_key: self.crypto_key(),
            verification_code: self.verification_code(),
            extra: &self.extra,
            raw: &self.raw,
        }
        .serialize(serializer)
    }
}

/// Turns the scan into printable ASCII plus GS bytes, without leading or trailing GS.
fn normalise(input: &str) -> Result<Vec<u8>, MarkingError> {
    if input.chars().nth(MAX_INPUT_CHARS).is_some() {
        return Err(MarkingError::TooLong {
            max: MAX_INPUT_CHARS,
        });
    }
    let edge_ws = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    let front = input.trim_start_matches(edge_ws);
    let front = SYMBOLOGY_IDS
        .iter()
        .find_map(|id| front.strip_prefix(id))
        .unwrap_or(front);
    let start = input.len() - front.len();
    let body = front.trim_end_matches(edge_ws);

    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while let Some(c) = body[i..].chars().next() {
        let rest = &body[i..];
        let step = if matches!(c, '\u{1d}' | '\u{241d}' | '\u{2194}' | ' ') {
            out.push(GS_BYTE);
            c.len_utf8()
        } else if rest.starts_with("<GS>") {
            out.push(GS_BYTE);
            4
        } else if rest.starts_with("^]") {
            out.push(GS_BYTE);
            2
        } else if c.is_ascii_graphic() {
            out.push(c as u8);
            1
        } else {
            return Err(MarkingError::NotPrintable {
                position: input[..start + i].chars().count(),
                ch: c,
            });
        };
        i += step;
    }
    let first = out.iter().position(|&b| b != GS_BYTE).unwrap_or(out.len());
    let last = out
        .iter()
        .rposition(|&b| b != GS_BYTE)
        .map_or(first, |p| p + 1);
    Ok(out[first..last].to_vec())
}

fn parse_tobacco_pack(data: &[u8]) -> Result<MarkingCode, MarkingError> {
    if data.len() != TOBACCO_PACK_LEN {
        return Err(MarkingError::ShortFormLength { len: data.len() });
    }
    let (gtin, rest) = data.split_at(14);
    let (serial, tail) = rest.split_at(7);
    check_gtin(gtin)?;
    if let Some(&b) = serial.iter().find(|&&b| !is_set82(b)) {
        return Err(MarkingError::SerialInvalidChar { ch: b as char });
    }
    if let Some(&b) = tail.iter().find(|&&b| !is_set82(b)) {
        return Err(MarkingError::InvalidChar {
            field: "the verification code".into(),
            ch: b as char,
        });
    }
    Ok(MarkingCode {
        form: MarkingForm::TobaccoPack,
        gtin: ascii(gtin),
        serial: ascii(serial),
        crypto_key: None,
        verification_code: Some(ascii(tail)),
        extra: Vec::new(),
        elements: Vec::new(),
        raw: ascii(data),
    })
}

fn parse_gs1(data: &[u8]) -> Result<MarkingCode, MarkingError> {
    let fields = parse_fields(data, 0, Vec::new(), true)?;
    let take = |ai: &str| {
        fields
            .iter()
            .find(|f| f.spec.ai == ai)
            .map(|f| f.value.clone())
    };
    let gtin = take("01").ok_or(MarkingError::MissingGtin)?;
    let serial = take("21").ok_or(MarkingError::MissingSerial)?;
    let crypto_key = take("91");
    let (verification_code, verification_ai) = match take("92") {
        Some(v) => (Some(v), "92"),
        None => (take("93"), "93"),
    };
    let elements: Vec<Element> = fields
        .iter()
        .map(|f| Element {
            ai: f.spec.ai.to_string(),
            value: f.value.clone(),
        })
        .collect();
    let extra = elements
        .iter()
        .filter(|e| !matches!(e.ai.as_str(), "01" | "21" | "91") && e.ai != verification_ai)
        .cloned()
        .collect();
    let mut raw = String::new();
    for (i, f) in fields.iter().enumerate() {
        raw.push_str(f.spec.ai);
        raw.push_str(&f.value);
        if i + 1 < fields.len() && !f.spec.predefined {
            raw.push(GS);
        }
    }
    Ok(MarkingCode {
        form: MarkingForm::Gs1,
        gtin,
        serial,
        crypto_key,
        verification_code,
        extra,
        elements,
        raw,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    Digits,
    Set82,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    Fixed(usize),
    Variable(usize),
}

#[derive(Debug)]
struct AiSpec {
    ai: &'static str,
    charset: Charset,
    length: Length,
    /// In GS1's table of predefined lengths: no GS needed after it.
    predefined: bool,
    date: bool,
}

const fn spec(
    ai: &'static str,
    charset: Charset,
    length: Length,
    predefined: bool,
    date: bool,
) -> AiSpec {
    AiSpec {
        ai,
        charset,
        length,
        predefined,
        date,
    }
}

use Charset::{Digits, Set82};
use Length::{Fixed, Variable};

/// The AIs seen on unit-level marking codes. Prefix-free, like GS1's own table, so the first
/// match is the only one. 91 and 93 are X..90 in GS1 but always 4 characters in marking codes;
/// fixing their length is what makes a missing GS after them harmless.
const AIS: &[AiSpec] = &[
    spec("01", Digits, Fixed(14), true, false),
    spec("10", Set82, Variable(20), false, false),
    spec("11", Digits, Fixed(6), true, true),
    spec("13", Digits, Fixed(6), true, true),
    spec("15", Digits, Fixed(6), true, true),
    spec("16", Digits, Fixed(6), true, true),
    spec("17", Digits, Fixed(6), true, true),
    SERIAL,
    spec("240", Set82, Variable(30), false, false),
    spec("241", Set82, Variable(30), false, false),
    spec("3100", Digits, Fixed(6), true, false),
    spec("3101", Digits, Fixed(6), true, false),
    spec("3102", Digits, Fixed(6), true, false),
    spec("3103", Digits, Fixed(6), true, false),
    spec("3104", Digits, Fixed(6), true, false),
    spec("3105", Digits, Fixed(6), true, false),
    spec("7003", Digits, Fixed(10), false, false),
    spec("8005", Digits, Fixed(6), false, false),
    spec("91", Set82, Fixed(4), false, false),
    spec("92", Set82, Variable(90), false, false),
    spec("93", Set82, Fixed(4), false, false),
];

fn lookup(data: &[u8]) -> Option<&'static AiSpec> {
    AIS.iter().find(|s| data.starts_with(s.ai.as_bytes()))
}

#[derive(Debug, Clone)]
struct Field {
    spec: &'static AiSpec,
    value: String,
}

/// Parses element strings from `pos` to the end. `recover` enables the missing-GS search after
/// AI 21; candidate remainders are parsed without it, which bounds the search to one level.
fn parse_fields(
    data: &[u8],
    mut pos: usize,
    mut fields: Vec<Field>,
    recover: bool,
) -> Result<Vec<Field>, MarkingError> {
    loop {
        while data.get(pos) == Some(&GS_BYTE) {
            pos += 1;
        }
        let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) else {
            return Ok(fields);
        };
        let spec = lookup(rest).ok_or_else(|| MarkingError::UnknownAi {
            found: ascii(&rest[..rest.len().min(4)]),
        })?;
        if fields.iter().any(|f| f.spec.ai == spec.ai) {
            return Err(MarkingError::DuplicateAi {
                ai: spec.ai.to_string(),
            });
        }
        pos += spec.ai.len();
        let seg_end = data[pos..]
            .iter()
            .position(|&b| b == GS_BYTE)
            .map_or(data.len(), |n| pos + n);
        let seg = &data[pos..seg_end];
        match spec.length {
            Fixed(n) => {
                if seg.len() < n {
                    return Err(MarkingError::Truncated {
                        ai: spec.ai.to_string(),
                        expected: n,
                        found: seg.len(),
                    });
                }
                validate(spec, &seg[..n])?;
                fields.push(Field {
                    spec,
                    value: ascii(&seg[..n]),
                });
                pos += n;
                // A GS-terminated AI running on is a missing GS only if an AI follows.
                if seg.len() > n && !spec.predefined && lookup(&data[pos..]).is_none() {
                    return Err(MarkingError::FieldLength {
                        ai: spec.ai.to_string(),
                        expected: n,
                        found: seg.len(),
                    });
                }
            }
            Variable(_) if spec.ai == "21" && recover => {
                return parse_serial(data, pos, seg_end, fields);
            }
            Variable(_) => {
                validate(spec, seg)?;
                fields.push(Field {
                    spec,
                    value: ascii(seg),
                });
                pos = seg_end;
            }
        }
    }
}

/// Reads AI 21 whose data is `data[start..seg_end]` and the rest of the code, trying the
/// issued serial lengths when the GS after the serial seems to be missing.
fn parse_serial(
    data: &[u8],
    start: usize,
    seg_end: usize,
    fields: Vec<Field>,
) -> Result<Vec<Field>, MarkingError> {
    let seg = &data[start..seg_end];
    let with_serial = |serial: &[u8]| {
        let mut f = fields.clone();
        f.push(Field {
            spec: &SERIAL,
            value: ascii(serial),
        });
        f
    };
    let direct =
        validate(&SERIAL, seg).and_then(|()| parse_fields(data, seg_end, with_serial(seg), false));
    // A GS right after the serial shows the scanner sends separators: trust it unless the
    // result is incoherent (e.g. `92` without `91`: the GS after the serial alone was lost).
    let terminated = seg_end < data.len();
    if terminated && direct.as_ref().is_ok_and(|f| coherent(f)) {
        return direct;
    }
    let mut options = Vec::new();
    let direct_err = match direct {
        Ok(f) => {
            options.push(f);
            None
        }
        Err(e) => Some(e),
    };
    for k in KNOWN_SERIAL_LENS {
        if k >= seg.len() {
            continue;
        }
        let follows_serial = lookup(&seg[k..]).is_some_and(|s| AFTER_SERIAL.contains(&s.ai));
        if !follows_serial || validate(&SERIAL, &seg[..k]).is_err() {
            continue;
        }
        if let Ok(f) = parse_fields(data, start + k, with_serial(&seg[..k]), false) {
            options.push(f);
        }
    }
    if options.len() <= 1 {
        return options
            .pop()
            .ok_or(direct_err.unwrap_or(MarkingError::AmbiguousSeparator));
    }
    let mut coherent_options: Vec<_> = options.into_iter().filter(|f| coherent(f)).collect();
    if coherent_options.len() > 1 {
        coherent_options.retain(|f| {
            f.iter()
                .find(|x| x.spec.ai == "21")
                .is_some_and(|x| KNOWN_SERIAL_LENS.contains(&x.value.len()))
        });
    }
    match coherent_options.len() {
        1 => Ok(coherent_options.remove(0)),
        _ => Err(MarkingError::AmbiguousSeparator),
    }
}

const SERIAL: AiSpec = spec("21", Set82, Variable(MAX_SERIAL_LEN), false, false);

/// Crypto tails as the operator issues them: `91` with `92`, or `93` alone.
fn coherent(fields: &[Field]) -> bool {
    let has = |ai: &str| fields.iter().any(|f| f.spec.ai == ai);
    has("91") == has("92") && !(has("93") && (has("91") || has("92")))
}

fn validate(spec: &AiSpec, value: &[u8]) -> Result<(), MarkingError> {
    let is_serial = spec.ai == "21";
    if value.is_empty() {
        return Err(if is_serial {
            MarkingError::MissingSerial
        } else {
            MarkingError::EmptyField {
                ai: spec.ai.to_string(),
            }
        });
    }
    if let Variable(max) = spec.length
        && value.len() > max
    {
        return Err(if is_serial {
            MarkingError::SerialTooLong {
                len: value.len(),
                max,
            }
        } else {
            MarkingError::FieldTooLong {
                ai: spec.ai.to_string(),
                max,
                found: value.len(),
            }
        });
    }
    if spec.ai == "01" {
        return check_gtin(value);
    }
    let allowed = |b: u8| match spec.charset {
        Digits => b.is_ascii_digit(),
        Set82 => is_set82(b),
    };
    if let Some(&b) = value.iter().find(|&&b| !allowed(b)) {
        return Err(if is_serial {
            MarkingError::SerialInvalidChar { ch: b as char }
        } else {
            MarkingError::InvalidChar {
                field: format!("AI ({})", spec.ai),
                ch: b as char,
            }
        });
    }
    if spec.date && yymmdd(&ascii(value)).is_none() {
        return Err(MarkingError::InvalidDate {
            ai: spec.ai.to_string(),
            value: ascii(value),
        });
    }
    Ok(())
}

fn check_gtin(gtin: &[u8]) -> Result<(), MarkingError> {
    if gtin.len() != 14 || !gtin.iter().all(u8::is_ascii_digit) {
        return Err(MarkingError::GtinFormat { found: ascii(gtin) });
    }
    let digits: Vec<u8> = gtin.iter().map(|b| b - b'0').collect();
    let expected = gs1_check_digit(&digits[..13]);
    if expected != digits[13] {
        return Err(MarkingError::GtinCheckDigit {
            expected,
            found: digits[13],
        });
    }
    Ok(())
}

/// GS1 YYMMDD; day 00 stands for the month's last day.
fn yymmdd(s: &str) -> Option<NaiveDate> {
    if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year = 2000 + s.get(0..2)?.parse::<i32>().ok()?;
    let month = s.get(2..4)?.parse::<u32>().ok()?;
    let day = s.get(4..6)?.parse::<u32>().ok()?;
    if day != 0 {
        return NaiveDate::from_ymd_opt(year, month, day);
    }
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else if (1..12).contains(&month) {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    } else {
        None
    };
    next?.pred_opt()
}

/// GS1 character set 82, the characters allowed in alphanumeric AIs.
fn is_set82(b: u8) -> bool {
    matches!(b, b'!' | b'"' | b'%'..=b'?' | b'A'..=b'Z' | b'_' | b'a'..=b'z')
}

/// Callers pass bytes already checked to be ASCII.
fn ascii(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GTIN: &str = "04780101164394";
    const V44: &str = "c2F2ZG8tdGVzdC12ZXJpZmljYXRpb24tY29kZS0zMg==";

    fn vector() -> String {
        format!("01{GTIN}215Wq&x<7\x1d91EE06\x1d92{V44}")
    }

    fn err(input: &str) -> MarkingError {
        MarkingCode::parse(input).expect_err(input)
    }

    #[test]
    fn tobacco_pack_vector() {
        let c = MarkingCode::parse("04780101164394TF&csaNNW1kK0tL").unwrap();
        assert_eq!(c.form(), MarkingForm::TobaccoPack);
        assert_eq!(c.gtin(), GTIN);
        assert_eq!(c.serial(), "TF&csaN");
        assert_eq!(c.verification_code(), Some("NW1kK0tL"));
        assert_eq!(c.crypto_key(), None);
        assert_eq!(c.label(), "04780101164394TF&csaN");
        assert_eq!(c.cis(), "010478010116439421TF&csaN");
        assert_eq!(c.raw(), "04780101164394TF&csaNNW1kK0tL");
        assert_eq!(c.ai("01"), None);
        assert!(c.extra().is_empty());
        // The pack symbol carries no FNC1, so scanners report it as plain DataMatrix.
        assert_eq!(
            MarkingCode::parse("]d104780101164394TF&csaNNW1kK0tL\r\n").unwrap(),
            c
        );
    }

    #[test]
    fn datamatrix_vector() {
        let c = MarkingCode::parse(&vector()).unwrap();
        assert_eq!(c.form(), MarkingForm::Gs1);
        assert_eq!(c.gtin(), GTIN);
        assert_eq!(c.serial(), "5Wq&x<7");
        assert_eq!(c.crypto_key(), Some("EE06"));
        assert_eq!(c.verification_code(), Some(V44));
        assert!(c.has_crypto_tail());
        assert_eq!(c.label(), "047801011643945Wq&x<7");
        assert_eq!(c.label().len(), 21);
        assert_eq!(c.cis(), "0104780101164394215Wq&x<7");
        assert_eq!(c.raw(), vector());
        assert_eq!(c.ai("92"), Some(V44));
        assert!(c.extra().is_empty());
        assert_eq!(vector().parse::<MarkingCode>().unwrap(), c);
    }

    #[test]
    fn gs_substitutes_and_prefixes() {
        let expected = MarkingCode::parse(&vector()).unwrap();
        for sep in [
            "\x1d", "<GS>", "\u{241d}", "^]", "\u{2194}", " ", "\x1d\x1d",
        ] {
            let body = vector().replace('\x1d', sep);
            for prefix in ["", "\x1d", "]d2", "]d2\x1d", "]C1", "]Q3", "]d2<GS>", "  "] {
                for suffix in ["", "\r\n", "\n", "\t", "\x1d"] {
                    let input = format!("{prefix}{body}{suffix}");
                    assert_eq!(
                        MarkingCode::parse(&input).as_ref(),
                        Ok(&expected),
                        "{input:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn missing_gs_is_recovered_when_unambiguous() {
        let expected = MarkingCode::parse(&vector()).unwrap();
        let run_together = vector().replace('\x1d', "");
        assert_eq!(MarkingCode::parse(&run_together).unwrap(), expected);
        assert_eq!(expected.raw(), vector());
        // Only the GS after the serial lost: a `92` without its `91` gives it away.
        let partial = format!("01{GTIN}215Wq&x<791EE06\x1d92{V44}");
        assert_eq!(MarkingCode::parse(&partial).unwrap(), expected);
        // 13-char serial (clothing, shoes, medicines).
        let c = MarkingCode::parse(&format!("01{GTIN}21AbCdEfGhIjKlM91Ab1292{V44}")).unwrap();
        assert_eq!(c.serial(), "AbCdEfGhIjKlM");
        assert_eq!(c.crypto_key(), Some("Ab12"));
        // Dairy: 6-char serial and a `93` tail; the literal 12-char serial loses to the split.
        let c = MarkingCode::parse(&format!("01{GTIN}21ABCDEF93abcd")).unwrap();
        assert_eq!(
            (c.serial(), c.verification_code()),
            ("ABCDEF", Some("abcd"))
        );
        // Tobacco block: serial, price, tail.
        let c = MarkingCode::parse(&format!("01{GTIN}21ABCDEFG800501234593abcd")).unwrap();
        assert_eq!(c.serial(), "ABCDEFG");
        assert_eq!(c.ai("8005"), Some("012345"));
        assert_eq!(c.verification_code(), Some("abcd"));
        assert_eq!(
            c.raw(),
            format!("01{GTIN}21ABCDEFG\x1d8005012345\x1d93abcd")
        );
    }

    #[test]
    fn missing_gs_ambiguity_is_an_error() {
        // A 13-char serial, or a 7-char serial and a `93` tail: both are issued.
        let input = format!("01{GTIN}21ABCDEFG93abcd");
        assert_eq!(err(&input), MarkingError::AmbiguousSeparator);
        let with_gs = MarkingCode::parse(&format!("01{GTIN}21ABCDEFG\x1d93abcd")).unwrap();
        assert_eq!(with_gs.serial(), "ABCDEFG");
        // With GS after the serial, a serial that merely looks like it holds a tail is kept.
        let c = MarkingCode::parse(&format!("01{GTIN}21ABCDEF10XYZ\x1d93abcd")).unwrap();
        assert_eq!(c.serial(), "ABCDEF10XYZ");
        // Too long for a serial and no issued split fits.
        assert_eq!(
            err(&format!("01{GTIN}21ABCDEFGHIJKLMNOPQRSTU")),
            MarkingError::SerialTooLong { len: 21, max: 20 }
        );
    }

    #[test]
    fn without_crypto_tail() {
        let c = MarkingCode::parse(&format!("01{GTIN}215Wq&x<7")).unwrap();
        assert_eq!(c.serial(), "5Wq&x<7");
        assert!(!c.has_crypto_tail());
        assert_eq!(c.crypto_key(), None);
        assert_eq!(c.label(), "047801011643945Wq&x<7");
    }

    #[test]
    fn other_ais_and_canonical_raw() {
        let input =
            format!("01{GTIN}21ABCDEF\x1d93abcd\x1d3103000750\x1d17261100\x1d10LOT-7\x1d240X1");
        let c = MarkingCode::parse(&input).unwrap();
        assert_eq!(c.verification_code(), Some("abcd"));
        let extra: Vec<(&str, &str)> = c
            .extra()
            .iter()
            .map(|e| (e.ai.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            extra,
            [
                ("3103", "000750"),
                ("17", "261100"),
                ("10", "LOT-7"),
                ("240", "X1")
            ]
        );
        // Day 00 is the last day of the month.
        assert_eq!(c.expiry(), NaiveDate::from_ymd_opt(2026, 11, 30));
        // No GS after predefined-length AIs, one after every other field but the last.
        assert_eq!(
            c.raw(),
            format!("01{GTIN}21ABCDEF\x1d93abcd\x1d31030007501726110010LOT-7\x1d240X1")
        );
        assert_eq!(MarkingCode::parse(c.raw()).unwrap(), c);

        let c = MarkingCode::parse("0104780101164394172612311021ABC\x1d93abcd");
        // `10` is variable: it swallows `21ABC` up to the GS, so the serial is missing.
        assert_eq!(c, Err(MarkingError::MissingSerial));
        let c = MarkingCode::parse(&format!("17261231\x1d01{GTIN}21ABC")).unwrap();
        assert_eq!(c.expiry(), NaiveDate::from_ymd_opt(2026, 12, 31));
        assert_eq!(c.serial(), "ABC");
        let c = MarkingCode::parse(&format!("01{GTIN}21ABC\x1d92{V44}\x1d93abcd")).unwrap();
        assert_eq!(c.verification_code(), Some(V44));
        assert_eq!(c.ai("93"), Some("abcd"));
        assert_eq!(c.extra().len(), 1);
    }

    #[test]
    fn gtin_errors() {
        assert_eq!(
            err(&format!("0104780101164395215Wq&x<7\x1d91EE06\x1d92{V44}")),
            MarkingError::GtinCheckDigit {
                expected: 4,
                found: 5
            }
        );
        assert_eq!(
            err("04780101164395TF&csaNNW1kK0tL"),
            MarkingError::GtinCheckDigit {
                expected: 4,
                found: 5
            }
        );
        assert_eq!(
            err("010478010116439A21abc"),
            MarkingError::GtinFormat {
                found: "0478010116439A".into()
            }
        );
        assert_eq!(
            err("01047801011643\x1d21abc"),
            MarkingError::Truncated {
                ai: "01".into(),
                expected: 14,
                found: 12
            }
        );
        assert_eq!(err("215Wq&x<7\x1d91EE06"), MarkingError::MissingGtin);
        assert_eq!(err("4780101164394"), MarkingError::ProductBarcode);
        assert_eq!(err(GTIN), MarkingError::ProductBarcode);
    }

    #[test]
    fn field_errors() {
        let base = format!("01{GTIN}215Wq&x<7");
        let cases = [
            (
                format!("{base}\x1d91EE"),
                MarkingError::Truncated {
                    ai: "91".into(),
                    expected: 4,
                    found: 2,
                },
            ),
            (
                format!("{base}\x1d172612"),
                MarkingError::Truncated {
                    ai: "17".into(),
                    expected: 6,
                    found: 4,
                },
            ),
            (
                format!("{base}\x1d99abc"),
                MarkingError::UnknownAi {
                    found: "99ab".into(),
                },
            ),
            (
                format!("{base}\x1d21abc"),
                MarkingError::DuplicateAi { ai: "21".into() },
            ),
            (
                format!("01{GTIN}01{GTIN}21abc"),
                MarkingError::DuplicateAi { ai: "01".into() },
            ),
            (
                format!("{base}\x1d91EE06XY\x1d92{V44}"),
                MarkingError::FieldLength {
                    ai: "91".into(),
                    expected: 4,
                    found: 6,
                },
            ),
            (
                format!("{base}\x1d17261332"),
                MarkingError::InvalidDate {
                    ai: "17".into(),
                    value: "261332".into(),
                },
            ),
            (
                format!("{base}\x1d8005012A45"),
                MarkingError::InvalidChar {
                    field: "AI (8005)".into(),
                    ch: 'A',
                },
            ),
            (
                format!("{base}\x1d92{}", "A".repeat(91)),
                MarkingError::FieldTooLong {
                    ai: "92".into(),
                    max: 90,
                    found: 91,
                },
            ),
            (
                format!("{base}\x1d10\x1d93abcd"),
                MarkingError::EmptyField { ai: "10".into() },
            ),
            (
                format!("01{GTIN}\x1d91EE06\x1d92{V44}"),
                MarkingError::MissingSerial,
            ),
            (format!("01{GTIN}21"), MarkingError::MissingSerial),
            (
                format!("01{GTIN}21ab#c"),
                MarkingError::SerialInvalidChar { ch: '#' },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(err(&input), expected, "{input:?}");
        }
    }

    #[test]
    fn input_errors() {
        for empty in ["", "   ", "\r\n", "\x1d", "<GS><GS>", "]d2"] {
            assert_eq!(err(empty), MarkingError::Empty, "{empty:?}");
        }
        assert_eq!(
            err(&"0".repeat(MAX_INPUT_CHARS + 1)),
            MarkingError::TooLong {
                max: MAX_INPUT_CHARS
            }
        );
        assert_eq!(
            err(&format!("01{GTIN}21ab\u{0}c")),
            MarkingError::NotPrintable {
                position: 20,
                ch: '\u{0}'
            }
        );
        // Russian keyboard layout turns Latin letters into Cyrillic ones.
        assert_eq!(
            err(&format!(" ]d201{GTIN}215Цq")),
            MarkingError::NotPrintable {
                position: 23,
                ch: 'Ц'
            }
        );
        assert_eq!(
            err("0478010116439412345678901"),
            MarkingError::ShortFormLength { len: 25 }
        );
        assert_eq!(
            err("04780101164394TF&csaNNW1kK0t#"),
            MarkingError::InvalidChar {
                field: "the verification code".into(),
                ch: '#'
            }
        );
    }

    #[test]
    fn matches_product_barcode() {
        let c = MarkingCode::parse(&vector()).unwrap();
        assert!(c.matches_barcode(&Barcode::parse("4780101164394").unwrap()));
        assert!(c.matches_barcode(&Barcode::parse(GTIN).unwrap()));
        assert!(!c.matches_barcode(&Barcode::parse("4601234567893").unwrap()));
        assert!(!c.matches_barcode(&Barcode::parse("ABC-123").unwrap()));
    }

    #[test]
    fn serializes_identity_and_tail() {
        let c = MarkingCode::parse(&vector()).unwrap();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["form"], "gs1");
        assert_eq!(json["gtin"], GTIN);
        assert_eq!(json["serial"], "5Wq&x<7");
        assert_eq!(json["label"], "047801011643945Wq&x<7");
        assert_eq!(json["cis"], "0104780101164394215Wq&x<7");
        assert_eq!(json["crypto_key"], "EE06");
        assert_eq!(json["verification_code"], V44);
        assert_eq!(json["raw"], vector());
        assert_eq!(json["extra"], serde_json::json!([]));
        let pack = MarkingCode::parse("04780101164394TF&csaNNW1kK0tL").unwrap();
        assert_eq!(serde_json::to_value(&pack).unwrap()["form"], "tobacco_pack");
    }

    /// Invariants every accepted code must hold, whatever the input.
    fn check_invariants(code: &MarkingCode) {
        assert_eq!(code.gtin().len(), 14);
        assert!(crate::barcode::gs1_valid(code.gtin()));
        assert!((1..=MAX_SERIAL_LEN).contains(&code.serial().len()));
        assert!(code.serial().bytes().all(is_set82));
        assert_eq!(code.label(), format!("{}{}", code.gtin(), code.serial()));
        assert_eq!(code.cis(), format!("01{}21{}", code.gtin(), code.serial()));
        assert_eq!(MarkingCode::parse(code.raw()).as_ref(), Ok(code));
    }

    fn gtin() -> impl Strategy<Value = String> {
        "[0-9]{13}".prop_map(|body| {
            let digits: Vec<u8> = body.bytes().map(|b| b - b'0').collect();
            format!("{body}{}", gs1_check_digit(&digits))
        })
    }

    const SET82: &str = "[!\"%&'()*+,\\-./0-9:;<=>?A-Z_a-z]";

    fn set82(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("{SET82}{{{},{}}}", len.start(), len.end()))
            .expect("valid regex")
    }

    /// Serials whose end could itself be read as a crypto tail are ambiguous without GS.
    fn looks_like_tail(serial: &str) -> bool {
        KNOWN_SERIAL_LENS.iter().any(|&k| {
            serial
                .get(k..)
                .is_some_and(|rest| AFTER_SERIAL.iter().any(|ai| rest.starts_with(ai)))
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_unicode(s in any::<String>()) {
            if let Ok(code) = MarkingCode::parse(&s) {
                check_invariants(&code);
            }
        }

        #[test]
        fn parse_never_panics_on_latin1(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let s: String = bytes.iter().map(|&b| b as char).collect();
            if let Ok(code) = MarkingCode::parse(&s) {
                check_invariants(&code);
            }
        }

        #[test]
        fn parse_never_panics_near_valid(
            gtin in gtin(),
            tail in "([0-9A-Za-z&<>%\"?_ ]|\x1d|<GS>|\u{241d}|\\]d2){0,70}",
        ) {
            for input in [format!("01{gtin}{tail}"), format!("01{gtin}21{tail}"), format!("{gtin}{tail}")] {
                if let Ok(code) = MarkingCode::parse(&input) {
                    check_invariants(&code);
                }
            }
        }

        #[test]
        fn round_trips_in_every_gs_variant(
            gtin in gtin(),
            serial in set82(1..=20),
            key in set82(4..=4),
            verification in "[A-Za-z0-9+/]{43}=",
            sep in prop::sample::select(vec!["\x1d", "<GS>", "\u{241d}", "^]", "\u{2194}", " "]),
            prefix in prop::sample::select(vec!["", "\x1d", "]d2", "]d2\x1d", "]C1"]),
        ) {
            prop_assume!(!serial.contains("<GS>"));
            let canonical = format!("01{gtin}21{serial}\x1d91{key}\x1d92{verification}");
            let input = format!("{prefix}{}", canonical.replace('\x1d', sep));
            let code = MarkingCode::parse(&input).unwrap();
            prop_assert_eq!(code.gtin(), gtin.as_str());
            prop_assert_eq!(code.serial(), serial.as_str());
            prop_assert_eq!(code.crypto_key(), Some(key.as_str()));
            prop_assert_eq!(code.verification_code(), Some(verification.as_str()));
            prop_assert_eq!(code.raw(), canonical.as_str());

            let with_93 = format!("{prefix}01{gtin}21{serial}{sep}93{key}");
            let code = MarkingCode::parse(&with_93).unwrap();
            prop_assert_eq!(code.serial(), serial.as_str());
            prop_assert_eq!(code.verification_code(), Some(key.as_str()));

            if !looks_like_tail(&serial) {
                let bare = MarkingCode::parse(&format!("{prefix}01{gtin}21{serial}")).unwrap();
                prop_assert_eq!(bare.serial(), serial.as_str());
                prop_assert_eq!(bare.gtin(), gtin.as_str());
            }
        }

        #[test]
        fn round_trips_without_any_gs(
            gtin in gtin(),
            serial in prop::sample::select(KNOWN_SERIAL_LENS.to_vec())
                .prop_flat_map(|len| set82(len..=len)),
            key in set82(4..=4),
            verification in "[A-Za-z0-9+/]{43}=",
        ) {
            let canonical = format!("01{gtin}21{serial}\x1d91{key}\x1d92{verification}");
            let code = MarkingCode::parse(&canonical.replace('\x1d', "")).unwrap();
            prop_assert_eq!(code.serial(), serial.as_str());
            prop_assert_eq!(code.raw(), canonical.as_str());
        }

        #[test]
        fn tobacco_packs_round_trip(gtin in gtin(), serial in set82(7..=7), tail in set82(8..=8)) {
            // A pack whose GTIN starts with 01 could in theory also read as AIs.
            prop_assume!(!gtin.starts_with("01"));
            let code = MarkingCode::parse(&format!("]d1{gtin}{serial}{tail}")).unwrap();
            prop_assert_eq!(code.form(), MarkingForm::TobaccoPack);
            prop_assert_eq!(code.gtin(), gtin.as_str());
            prop_assert_eq!(code.serial(), serial.as_str());
            prop_assert_eq!(code.verification_code(), Some(tail.as_str()));
        }
    }
}
