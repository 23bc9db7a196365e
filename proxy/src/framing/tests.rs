use super::*;
use FramingError::*;

#[test]
fn content_length_is_digits_only() {
    assert_eq!(content_length(b"5"), Ok(5));
    assert_eq!(content_length(b"0"), Ok(0));
    // OWS belongs to the field, leading zeros to the number (Envoy accepts both).
    assert_eq!(content_length(b" \t5 \t"), Ok(5));
    assert_eq!(content_length(b"005"), Ok(5));
    assert_eq!(content_length(b"18446744073709551615"), Ok(u64::MAX));
    for bad in [
        &b"+5"[..],
        b"-5",
        b"5 5",
        b"5,5",
        b"5, 5",
        b"0x5",
        b"5.0",
        b"",
        b"  ",
        b"\xc2\xa05",
        b"5\xc2\xa0",
        b"\x0b5",
        b"18446744073709551616",
        b"99999999999999999999999",
    ] {
        assert_eq!(content_length(bad), Err(InvalidContentLength), "{bad:?}");
    }
}

#[test]
fn only_chunked_alone_is_a_transfer_coding() {
    for good in [&b"chunked"[..], b"Chunked", b"CHUNKED", b" chunked\t"] {
        assert!(is_chunked(good), "{good:?}");
    }
    for bad in [
        &b"identity"[..],
        b"gzip, chunked",
        b"chunked, gzip",
        b"chunked, chunked",
        b"chunked;q=1",
        b"xchunked",
        b"",
        b"\x0bchunked",
    ] {
        assert!(!is_chunked(bad), "{bad:?}");
    }
}

fn fields(cl: &[&[u8]], te: &[&[u8]]) -> Result<FramingFields, FramingError> {
    let mut f = FramingFields::default();
    for v in cl {
        f.content_length(v)?;
    }
    for v in te {
        f.transfer_encoding(v);
    }
    Ok(f)
}

#[test]
fn request_length_follows_rfc_9112_and_envoy() {
    let request = |cl: &[&[u8]], te: &[&[u8]]| fields(cl, te).and_then(|f| f.request());
    assert_eq!(request(&[], &[]), Ok(BodyLength::Length(0)));
    assert_eq!(request(&[b"7"], &[]), Ok(BodyLength::Length(7)));
    assert_eq!(request(&[], &[b"chunked"]), Ok(BodyLength::Chunked));
    // Both framings: refused, whichever came first (Envoy's default, 400).
    assert_eq!(
        request(&[b"5"], &[b"chunked"]),
        Err(ContentLengthAndTransferEncoding)
    );
    assert_eq!(
        request(&[b"5"], &[b"identity"]),
        Err(ContentLengthAndTransferEncoding)
    );
    // A second Content-Length, even an equal one.
    assert_eq!(request(&[b"5", b"5"], &[]), Err(MultipleContentLength));
    assert_eq!(request(&[b"5", b"6"], &[]), Err(MultipleContentLength));
    assert_eq!(request(&[b"+5"], &[]), Err(InvalidContentLength));
    // Codings other than one `chunked` (Envoy: 501).
    for te in [
        &[&b"identity"[..]][..],
        &[b"gzip, chunked"],
        &[b"chunked", b"chunked"],
        &[b"gzip", b"chunked"],
        &[b""],
    ] {
        assert_eq!(request(&[], te), Err(UnsupportedTransferEncoding), "{te:?}");
    }
}

#[test]
fn response_length_follows_rfc_9112_and_envoy() {
    let response = |cl: &[&[u8]], te: &[&[u8]], status: u16, head: bool| {
        fields(cl, te).and_then(|f| f.response(status, head))
    };
    assert_eq!(
        response(&[b"5"], &[], 200, false),
        Ok(BodyLength::Length(5))
    );
    assert_eq!(
        response(&[], &[b"chunked"], 200, false),
        Ok(BodyLength::Chunked)
    );
    assert_eq!(response(&[], &[], 200, false), Ok(BodyLength::UntilClose));
    // The response-splitting case of issue 15, and the same with the fields swapped.
    assert_eq!(
        response(&[b"5"], &[b"chunked"], 200, false),
        Err(ContentLengthAndTransferEncoding)
    );
    assert_eq!(
        fields(&[], &[b"chunked"])
            .and_then(|mut f| f.content_length(b"5").map(|()| f))
            .and_then(|f| f.response(200, false)),
        Err(ContentLengthAndTransferEncoding)
    );
    assert_eq!(
        response(&[b"5"], &[b"identity"], 200, false),
        Err(ContentLengthAndTransferEncoding)
    );
    assert_eq!(
        response(&[], &[b"identity"], 200, false),
        Err(UnsupportedTransferEncoding)
    );
    assert_eq!(
        response(&[], &[b"gzip, chunked"], 200, false),
        Err(UnsupportedTransferEncoding)
    );
    assert_eq!(
        response(&[b"+5"], &[], 200, false),
        Err(InvalidContentLength)
    );
    // No body whatever is announced, but the announcement must still be valid.
    assert_eq!(response(&[b"7"], &[], 200, true), Ok(BodyLength::Length(0)));
    assert_eq!(
        response(&[], &[b"chunked"], 200, true),
        Ok(BodyLength::Length(0))
    );
    assert_eq!(
        response(&[b"5"], &[b"chunked"], 200, true),
        Err(ContentLengthAndTransferEncoding)
    );
    assert_eq!(
        response(&[b"5"], &[], 304, false),
        Ok(BodyLength::Length(0))
    );
    assert_eq!(
        response(&[], &[b"chunked"], 304, false),
        Ok(BodyLength::Length(0))
    );
    // 1xx and 204 carry no framing at all (Envoy: 502), an explicit zero aside.
    assert_eq!(
        response(&[b"0"], &[], 204, false),
        Ok(BodyLength::Length(0))
    );
    assert_eq!(
        response(&[b"5"], &[], 204, false),
        Err(BodyInBodylessResponse)
    );
    assert_eq!(
        response(&[], &[b"chunked"], 204, false),
        Err(BodyInBodylessResponse)
    );
    assert_eq!(
        response(&[b"5"], &[], 100, false),
        Err(BodyInBodylessResponse)
    );
    assert_eq!(response(&[], &[], 103, false), Ok(BodyLength::Length(0)));
}

#[test]
fn hyper_parsed_responses_are_checked_alike() {
    let map = |fields: &[(&str, &str)]| {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    };
    let check = |status: u16, fields: &[(&str, &str)]| {
        check_response(StatusCode::from_u16(status).unwrap(), &map(fields), false)
    };
    assert_eq!(check(200, &[("content-length", "5")]), Ok(()));
    assert_eq!(check(200, &[("transfer-encoding", "chunked")]), Ok(()));
    assert_eq!(
        check(
            200,
            &[("content-length", "5"), ("transfer-encoding", "chunked")]
        ),
        Err(ContentLengthAndTransferEncoding)
    );
    assert_eq!(
        check(200, &[("transfer-encoding", "identity")]),
        Err(UnsupportedTransferEncoding)
    );
    assert_eq!(
        check(200, &[("content-length", "5, 5")]),
        Err(InvalidContentLength)
    );
    assert_eq!(
        check(200, &[("content-length", "5"), ("content-length", "5")]),
        Err(MultipleContentLength)
    );
    assert_eq!(
        check(204, &[("content-length", "3")]),
        Err(BodyInBodylessResponse)
    );
    assert_eq!(
        check(101, &[("content-length", "3"), ("transfer-encoding", "x")]),
        Ok(())
    );
}

fn request(text: &[u8]) -> Result<Option<RequestHead>, FramingError> {
    parse_request_head(text, 60 * 1024)
}

fn request_error(text: &[u8]) -> Option<FramingError> {
    request(text).err()
}

#[test]
fn request_heads_give_their_parts_and_framing() {
    let text =
        b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: Close\r\n\r\nabc";
    let head = request(text).unwrap().unwrap();
    assert_eq!(head.method, Method::POST);
    assert_eq!(head.version, Version::HTTP_11);
    assert_eq!(&text[head.target.clone()], b"/a?b=1");
    assert_eq!(head.len, text.len() - 3);
    assert_eq!(head.body, BodyLength::Length(3));
    assert!(head.close && !head.upgrade && !head.expect);
    let fields: Vec<_> = head
        .fields()
        .map(|(name, range)| (name.as_str().to_owned(), text[range].to_vec()))
        .collect();
    assert_eq!(fields[0], ("host".to_owned(), b"x".to_vec()));
    assert_eq!(fields.len(), 3);

    let head = request(b"GET / HTTP/1.1\r\nUpgrade: ws\r\nExpect: 100-continue\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(head.upgrade && head.expect && !head.close);
    let head = request(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(
        (head.version, head.body),
        (Version::HTTP_10, BodyLength::Chunked)
    );
    assert!(matches!(
        request(b"GET / HTTP/1.1\r\nHost: x\r\n"),
        Ok(None)
    ));
}

#[test]
fn request_heads_follow_the_field_rules() {
    // Accepted, as by Envoy: bare LF line ends, HTAB and obs-text in values.
    for good in [
        &b"GET / HTTP/1.1\nHost: x\n\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: b\tc\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: b\xffc\r\n\r\n",
    ] {
        assert!(matches!(request(good), Ok(Some(_))), "{good:?}");
    }
    let cases: &[(&[u8], FramingError)] = &[
        (b"GET / HTTP/1.1\r\nX-A : b\r\n\r\n", InvalidHeaderName),
        (
            b"GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            InvalidHeaderName,
        ),
        (b"GET / HTTP/1.1\r\n: b\r\n\r\n", InvalidHeaderName),
        (b"GET / HTTP/1.1\r\nX(A: b\r\n\r\n", InvalidHeaderName),
        (b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", InvalidHeaderName),
        (b"GET / HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", InvalidHeaderName),
        (b"GET / HTTP/1.1\r\nX-A: b\rc\r\n\r\n", MalformedHead),
        (b"GET / HTTP/1.1\r\nX-A: b\x00c\r\n\r\n", MalformedHead),
        (b"GET / HTTP/1.1\r\nX-A: b\x01c\r\n\r\n", MalformedHead),
        (b"GET / HTTP/1.1\r\nX-A: b\x7fc\r\n\r\n", MalformedHead),
        (b"GET / HTTP/1.1\r\nX\x7fA: b\r\n\r\n", InvalidHeaderName),
        (b"G(T / HTTP/1.1\r\n\r\n", MalformedHead),
        (b"GET / HTTP/1.2\r\n\r\n", UnsupportedVersion),
        (b"GET / HTTP/2.0\r\n\r\n", UnsupportedVersion),
        (b"\x16\x03\x01\x00\xa5\x01\r\n\r\n", MalformedHead),
        (
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
            InvalidContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: \xc2\xa05\r\n\r\nhello",
            InvalidContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            MultipleContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            ContentLengthAndTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            ContentLengthAndTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            UnsupportedTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: \x0bchunked\r\n\r\n",
            MalformedHead,
        ),
    ];
    for (text, error) in cases {
        assert_eq!(
            request_error(text),
            Some(*error),
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }
}

#[test]
fn request_heads_have_envoys_limits() {
    let with = |n: usize| {
        let mut text = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..n {
            text.extend_from_slice(format!("x-{i}: a\r\n").as_bytes());
        }
        text.extend_from_slice(b"\r\n");
        text
    };
    assert!(matches!(request(&with(MAX_HEADERS)), Ok(Some(_))));
    assert_eq!(request_error(&with(MAX_HEADERS + 1)), Some(TooManyHeaders));
    let long = format!("GET / HTTP/1.1\r\nX-A: {}\r\n\r\n", "a".repeat(100));
    assert!(matches!(
        parse_request_head(long.as_bytes(), 200),
        Ok(Some(_))
    ));
    assert_eq!(
        parse_request_head(long.as_bytes(), 100).err(),
        Some(HeadTooLarge)
    );
    // Too long before it is even complete.
    assert_eq!(
        parse_request_head(&long.as_bytes()[..110], 100).err(),
        Some(HeadTooLarge)
    );
}

#[test]
fn request_errors_get_envoys_statuses() {
    assert_eq!(InvalidContentLength.request_status(), 400);
    assert_eq!(ContentLengthAndTransferEncoding.request_status(), 400);
    assert_eq!(UnsupportedTransferEncoding.request_status(), 501);
    assert_eq!(TooManyHeaders.request_status(), 431);
    assert_eq!(HeadTooLarge.request_status(), 431);
    assert_eq!(UnsupportedVersion.request_status(), 426);
    assert_eq!(InvalidChunkSize.request_status(), 400);
}

fn response(text: &[u8]) -> Result<Option<ResponseHead>, FramingError> {
    parse_response_head(text, false)
}

#[test]
fn response_heads_give_their_parts_and_framing() {
    let h = response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
        .unwrap()
        .unwrap();
    assert_eq!(
        (h.status, h.body, h.keep_alive),
        (StatusCode::OK, BodyLength::Length(5), true)
    );
    assert!(!h.hop_by_hop);
    let h = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(
        (h.body, h.keep_alive, h.hop_by_hop),
        (BodyLength::Chunked, true, true)
    );
    let h = response(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
    assert_eq!((h.body, h.keep_alive), (BodyLength::UntilClose, false));
    let h = response(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!h.keep_alive);
    let h = response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!((h.version, h.keep_alive), (Version::HTTP_10, false));
    let h = response(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(h.keep_alive);
    let h = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true)
        .unwrap()
        .unwrap();
    assert_eq!(h.body, BodyLength::Length(0));
    // Bare LF line ends and a missing reason phrase are accepted, as by Envoy.
    let h = response(b"HTTP/1.1 200\nX-A: b\nContent-Length: 5\n\nHELLO")
        .unwrap()
        .unwrap();
    assert_eq!(h.body, BodyLength::Length(5));
    assert!(matches!(
        response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"),
        Ok(None)
    ));
}

#[test]
fn bad_response_heads_are_named() {
    let cases: &[(&[u8], FramingError)] = &[
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n44\r\nHELLOHTTP/1.1 200 OK\r\n",
            ContentLengthAndTransferEncoding,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            ContentLengthAndTransferEncoding,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: identity\r\n\r\n",
            ContentLengthAndTransferEncoding,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nHELLO",
            UnsupportedTransferEncoding,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nHELLO",
            InvalidContentLength,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: \xc2\xa05\r\n\r\nHELLO",
            InvalidContentLength,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            MultipleContentLength,
        ),
        (
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
            BodyInBodylessResponse,
        ),
        (
            b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\n",
            BodyInBodylessResponse,
        ),
        (b"HTTP/1.1 200 OK\r\nX-A : b\r\n\r\n", InvalidHeaderName),
        (b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\n\r\n", InvalidHeaderName),
        (b"HTTP/1.1 200 OK\r\nX-A: b\x00c\r\n\r\n", MalformedHead),
        (b"HTTP/1.1 200 OK\r\nX-A: b\rc\r\n\r\n", MalformedHead),
        (b"HTTP/1.1 2000 OK\r\n\r\n", InvalidStatus),
        (b"HTTP/1.1 099 Weird\r\n\r\n", InvalidStatus),
        (b"http/1.1 200 OK\r\n\r\n", UnsupportedVersion),
        (b"SSH-2.0-OpenSSH\r\n\r\n", UnsupportedVersion),
    ];
    for (text, error) in cases {
        assert_eq!(
            response(text).err(),
            Some(*error),
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }
}

/// Decodes `pieces` fed one after another: the data, and whether the body ended exactly at
/// the end of the input.
pub(crate) fn decode_all(pieces: &[&[u8]]) -> Result<(Vec<u8>, bool), FramingError> {
    let mut decoder = ChunkedDecoder::new();
    let mut pending = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        pending.extend_from_slice(piece);
        loop {
            match decoder.step(&pending)? {
                ChunkStep::Framing(0) => break,
                ChunkStep::Framing(n) => {
                    pending.drain(..n);
                }
                ChunkStep::Data(n) => {
                    out.extend(pending.drain(..n));
                }
                ChunkStep::End(n) => {
                    pending.drain(..n);
                    return Ok((out, pending.is_empty()));
                }
            }
        }
    }
    Ok((out, false))
}

#[test]
fn chunked_bodies_decode_across_any_split() {
    let wire: &[u8] =
        b"5;ext=1;q=\"a \\\" b\"\r\nhello\r\n1 \r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n";
    for cut in 0..wire.len() {
        let (a, b) = wire.split_at(cut);
        assert_eq!(
            decode_all(&[a, b]),
            Ok((b"hello 0123456789".to_vec(), true)),
            "cut at {cut}"
        );
    }
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(decode_all(&bytes), Ok((b"hello 0123456789".to_vec(), true)));
    // What follows the body is left alone.
    assert_eq!(decode_all(&[b"0\r\n\r\nGET"]), Ok((vec![], false)));
}

#[test]
fn chunk_sizes_and_extensions_follow_the_grammar() {
    for good in [
        &b"a\r\n0123456789\r\n0\r\n\r\n"[..],
        b"A\r\n0123456789\r\n0\r\n\r\n",
        b"00000000000000000000a\r\n0123456789\r\n0\r\n\r\n",
        b"a ; n = v ; m = \"q\"\t\r\n0123456789\r\n0\r\n\r\n",
        b"a;n\r\n0123456789\r\n0;last\r\n\r\n",
    ] {
        assert_eq!(
            decode_all(&[good]).map(|(data, _)| data),
            Ok(b"0123456789".to_vec()),
            "{:?}",
            String::from_utf8_lossy(good)
        );
    }
    // The largest size fits: the decoder waits for the data.
    assert_eq!(
        decode_all(&[b"ffffffffffffffff\r\nab"]),
        Ok((b"ab".to_vec(), false))
    );
    let cases: &[(&[u8], FramingError)] = &[
        (b"0x5\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
        (b"+5\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
        (b"-5\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
        (b" 5\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
        (b"\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
        (b"5 5\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
        (b"g\r\n", InvalidChunkSize),
        (b"10000000000000000\r\n", InvalidChunkSize),
        (b"5\nhello\r\n0\r\n\r\n", InvalidChunkSize),
        (b"5\rhello\r\n0\r\n\r\n", InvalidChunkSize),
        (b"5;\r\nhello\r\n0\r\n\r\n", InvalidChunkExtension),
        (b"5;a\nb\r\nhello\r\n0\r\n\r\n", InvalidChunkExtension),
        (b"5;a\x01\r\nhello\r\n0\r\n\r\n", InvalidChunkExtension),
        (b"5;a=\r\nhello\r\n0\r\n\r\n", InvalidChunkExtension),
        (b"5;a=\"b\r\nhello\r\n0\r\n\r\n", InvalidChunkExtension),
        (b"5;a=b c\r\nhello\r\n0\r\n\r\n", InvalidChunkExtension),
        (b"5;=b\r\nhello\r\n0\r\n\r\n", InvalidChunkExtension),
        (b"5\r\nhelloXX\r\n0\r\n\r\n", InvalidChunkEnd),
        (b"5\r\nhello\n0\r\n\r\n", InvalidChunkEnd),
        (b"5\r\nhello\r0\r\n\r\n", InvalidChunkEnd),
    ];
    for (wire, error) in cases {
        assert_eq!(
            decode_all(&[wire]),
            Err(*error),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
    let mut long = b"5;a=".to_vec();
    long.resize(MAX_CHUNK_LINE + 1, b'b');
    assert_eq!(decode_all(&[&long]), Err(ChunkLineTooLong));
    long.truncate(MAX_CHUNK_LINE - 2);
    long.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    assert_eq!(decode_all(&[&long]), Ok((b"hello".to_vec(), true)));
}

#[test]
fn trailers_are_header_fields_within_limits() {
    assert_eq!(
        decode_all(&[b"0\r\nA: 1\r\nB-c:\t2 3\r\n\r\n"]),
        Ok((vec![], true))
    );
    for (wire, error) in [
        (&b"0\r\nA 1\r\n\r\n"[..], InvalidTrailer),
        (b"0\r\nA : 1\r\n\r\n", InvalidTrailer),
        (b"0\r\n: 1\r\n\r\n", InvalidTrailer),
        (b"0\r\nA: 1\r\n 2\r\n\r\n", InvalidTrailer),
        (b"0\r\nA: 1\x00\r\n\r\n", InvalidTrailer),
        (b"0\r\nA: 1\n\r\n", InvalidTrailer),
        (b"0\r\n\n", InvalidTrailer),
        (b"0\r\n\rX", InvalidTrailer),
    ] {
        assert_eq!(
            decode_all(&[wire]),
            Err(error),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
    let many = format!("0\r\n{}\r\n", "a: b\r\n".repeat(MAX_TRAILERS));
    assert_eq!(decode_all(&[many.as_bytes()]), Ok((vec![], true)));
    let many = format!("0\r\n{}\r\n", "a: b\r\n".repeat(MAX_TRAILERS + 1));
    assert_eq!(decode_all(&[many.as_bytes()]), Err(TrailersTooLarge));
    let big = format!("0\r\na: {}\r\n\r\n", "b".repeat(MAX_TRAILER_BYTES));
    assert_eq!(decode_all(&[big.as_bytes()]), Err(TrailersTooLarge));
}
