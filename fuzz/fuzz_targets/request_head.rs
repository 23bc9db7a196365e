//! The request head parser and the framing rules on it, on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proxy::framing::{self, BodyLength};

const LIMIT: usize = 60 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = framing::parse_request_head(data, LIMIT) else {
        return;
    };
    assert!(head.len <= data.len() && head.len <= LIMIT);
    assert!(head.target.end <= head.len);
    let (mut lengths, mut codings) = (Vec::new(), Vec::new());
    for (name, range) in head.fields() {
        assert!(range.end <= head.len);
        let value = &data[range];
        if name == "content-length" {
            lengths.push(value);
        } else if name == "transfer-encoding" {
            codings.push(value);
        }
    }
    // The message length says what the framing fields say, and never both.
    match head.body {
        BodyLength::Length(n) => {
            assert!(codings.is_empty());
            match lengths.as_slice() {
                [] => assert_eq!(n, 0),
                [one] => assert_eq!(framing::content_length(one), Ok(n)),
                _ => panic!("two content-length fields accepted"),
            }
        }
        BodyLength::Chunked => {
            assert!(lengths.is_empty());
            assert!(matches!(codings.as_slice(), [one] if framing::is_chunked(one)));
        }
        BodyLength::UntilClose => panic!("a request read until the close"),
    }
    // The head ends where it ends, whatever follows it.
    let again = framing::parse_request_head(&data[..head.len], LIMIT);
    assert!(matches!(again, Ok(Some(h)) if h.len == head.len && h.body == head.body));
});
