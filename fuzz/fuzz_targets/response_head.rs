//! The response head parser and the framing rules on it, on any bytes (the first byte says
//! whether the request was HEAD).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proxy::framing::{self, BodyLength};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;
    let Ok(Some(head)) = framing::parse_response_head(data, head_request) else {
        return;
    };
    assert!(head.len <= data.len());
    let status = head.status.as_u16();
    let (mut lengths, mut codings) = (0, 0);
    for (name, range) in head.fields() {
        assert!(range.end <= head.len);
        if name == "content-length" {
            lengths += 1;
        } else if name == "transfer-encoding" {
            codings += 1;
        }
    }
    assert!(
        lengths <= 1 && codings <= 1 && lengths + codings <= 1,
        "ambiguous framing accepted"
    );
    let bodyless = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    match head.body {
        BodyLength::Length(0) => {}
        BodyLength::Length(_) => assert!(!bodyless && lengths == 1),
        BodyLength::Chunked => assert!(!bodyless && codings == 1),
        BodyLength::UntilClose => assert!(!bodyless && !head.keep_alive && lengths + codings == 0),
    }
    if bodyless {
        assert_eq!(head.body, BodyLength::Length(0));
    }
    let again = framing::parse_response_head(&data[..head.len], head_request);
    assert!(matches!(again, Ok(Some(h)) if h.len == head.len && h.body == head.body));
});
