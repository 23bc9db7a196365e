use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A gate over one end of a socket pair; the other end is the client.
async fn gate(first: &[u8]) -> (Gate, TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (ours, _) = listener.accept().await.unwrap();
    let limits = ReadLimits {
        headers: std::time::Duration::from_secs(60),
        idle: None,
        request: None,
    };
    let gate = Gate::new(
        BytesMut::from(first),
        60 * 1024,
        limits,
        Arc::new(HttpStats::default()),
    );
    (gate, ours, client)
}

/// What hyper would read: until the client's bytes run out (a short wait shows that), the
/// gate errs, or the gate holds.
async fn read_all(gate: &mut Gate, stream: &mut TcpStream) -> (Vec<u8>, Option<io::Error>) {
    let mut seen = Vec::new();
    loop {
        let mut room = [0u8; 7];
        let mut buf = ReadBuf::new(&mut room);
        let read = std::future::poll_fn(|cx| gate.poll_read(stream, cx, &mut buf));
        match tokio::time::timeout(std::time::Duration::from_millis(200), read).await {
            Err(_) => return (seen, None),
            Ok(Err(e)) => return (seen, Some(e)),
            Ok(Ok(())) if buf.filled().is_empty() => return (seen, None),
            Ok(Ok(())) => seen.extend_from_slice(buf.filled()),
        }
    }
}

#[tokio::test]
async fn requests_the_rules_accept_pass_unchanged() {
    let first = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhel";
    let rest: &[u8] = b"lo\r\n0\r\nT: 1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 20\r\n\r\n01234567890123456789GET /c HTTP/1.1\r\n\r\n";
    let (mut gate, mut ours, mut client) = gate(first).await;
    client.write_all(rest).await.unwrap();
    let (seen, error) = read_all(&mut gate, &mut ours).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(seen, [&first[..], rest].concat());
    assert!(matches!(gate.state, State::Head));
}

#[tokio::test]
async fn a_refused_head_is_held_back_and_answered_at_the_close() {
    let first = b"GET /a HTTP/1.1\r\n\r\n";
    let refused =
        b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n";
    let (mut gate, mut ours, mut client) = gate(first).await;
    let notified = gate.refusals();
    client.write_all(refused).await.unwrap();
    let (seen, error) = read_all(&mut gate, &mut ours).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(seen, first, "the refused head reached hyper");
    tokio::time::timeout(std::time::Duration::from_secs(5), notified.notified())
        .await
        .expect("the connection's loop was not told");
    std::future::poll_fn(|cx| gate.poll_answer(&mut ours, cx))
        .await
        .unwrap();
    drop(ours);
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\nBad Request"), "{answer}");
}

#[tokio::test]
async fn later_heads_get_the_statuses_the_first_would() {
    for (head, status) in [
        (
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..],
            "501",
        ),
        (b"GET / HTTP/1.2\r\n\r\n", "426"),
        (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello", "400"),
    ] {
        let (mut gate, mut ours, mut client) = gate(b"GET /a HTTP/1.1\r\n\r\n").await;
        client.write_all(head).await.unwrap();
        read_all(&mut gate, &mut ours).await;
        let answer = gate.answer.take().expect("no answer");
        assert!(
            answer.starts_with(format!("HTTP/1.1 {status} ").as_bytes()),
            "{head:?}"
        );
    }
}

#[tokio::test]
async fn a_malformed_chunked_body_fails_hypers_read_after_its_good_bytes() {
    let first = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n";
    let (mut gate, mut ours, _client) = gate(first).await;
    let (seen, error) = read_all(&mut gate, &mut ours).await;
    // The head and the data passed; the framing bytes in the step that failed did not.
    assert!(
        first.starts_with(&seen) && seen.ends_with(b"hello"),
        "{seen:?}"
    );
    assert_eq!(error.unwrap().kind(), io::ErrorKind::InvalidData);
    assert!(
        gate.answer.is_none(),
        "a body error is answered by the router"
    );
}

#[tokio::test]
async fn bytes_after_an_upgrade_pass_as_they_are() {
    let first = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
    let (mut gate, mut ours, mut client) = gate(first).await;
    client
        .write_all(b"\x81\x05hello not http\r\n\r\n")
        .await
        .unwrap();
    let (seen, error) = read_all(&mut gate, &mut ours).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        seen,
        [&first[..], b"\x81\x05hello not http\r\n\r\n"].concat()
    );
}
