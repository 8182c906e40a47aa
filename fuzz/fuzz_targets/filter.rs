//! The SCIM filter parser (`rollcall::model::filter::parse_filter`).
//!
//! Invariants: no input panics; a filter that parses prints (the AST's
//! `Display`, its canonical text) as text that parses back to the same tree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall::model::filter::parse_filter;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(filter) = parse_filter(text) else { return };
    let printed = filter.to_string();
    match parse_filter(&printed) {
        Ok(reparsed) => assert!(
            reparsed == filter,
            "parse(print(ast)) != ast\n input:   {text:?}\n printed: {printed:?}\n ast:     {filter:?}\n reparsed: {reparsed:?}"
        ),
        Err(error) => panic!(
            "the canonical text does not parse\n input:   {text:?}\n printed: {printed:?}\n error:   {error}\n ast:     {filter:?}"
        ),
    }
});
