//! Marking codes arrive from scanners, keyboards and partner APIs: any bytes must either parse
//! into a code that holds its invariants or fail with an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use savdo_domain::barcode::gs1_valid;
use savdo_domain::marking::MarkingCode;

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let Ok(code) = MarkingCode::parse(&input) else {
        return;
    };
    assert_eq!(code.gtin().len(), 14);
    assert!(gs1_valid(code.gtin()), "GTIN check digit");
    assert!((1..=20).contains(&code.serial().len()));
    assert_eq!(code.label(), format!("{}{}", code.gtin(), code.serial()));
    assert_eq!(code.cis(), format!("01{}21{}", code.gtin(), code.serial()));
    // The normalised form must read back as the same code.
    assert_eq!(MarkingCode::parse(code.raw()).as_ref(), Ok(&code));
});
