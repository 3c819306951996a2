//! What already holds against hostile clients, kept under test: raw HTTP/2 frames over TLS for
//! the attacks no well-behaved client library will send — rapid reset (CVE-2023-44487) and a
//! CONTINUATION flood — and a listener that still serves everyone else afterwards.

mod support;

use std::time::Duration;

use http::Version;
use support::{config_text, recording_upstream, Client, Running, TestPki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK for `GET https://localhost/dinkes/faskes`: indexed `:method GET` (2), `:scheme https`
/// (7), then `:path` and `:authority` as literals with indexed names (4 and 1).
fn request_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x87];
    for (index, value) in [(0x04u8, "/dinkes/faskes"), (0x01, "localhost")] {
        block.push(index);
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// A literal header field without indexing, new name (names and values under 127 bytes).
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00, u8::try_from(name.len()).unwrap()];
    out.extend_from_slice(name.as_bytes());
    out.push(u8::try_from(value.len()).unwrap());
    out.extend_from_slice(value.as_bytes());
    out
}

/// Reads frames until a GOAWAY — its last stream id and error code — or the end of the
/// connection (`None`).
async fn goaway(
    mut tls: tokio::io::ReadHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
) -> Option<(u32, u32)> {
    let mut head = [0u8; 9];
    loop {
        tls.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        tls.read_exact(&mut payload).await.ok()?;
        if head[3] == GOAWAY {
            let last = u32::from_be_bytes(payload[..4].try_into().unwrap()) & 0x7fff_ffff;
            let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
            return Some((last, code));
        }
    }
}

async fn gateway() -> (Running, support::Recorder) {
    let pki = TestPki::new();
    let (upstream, recorder) = recording_upstream(&pki).await;
    let gw = Running::start(pki, &config_text(&upstream, "5s", "")).await;
    (gw, recorder)
}

/// The listener still serves a well-behaved client (the positive control of each attack).
async fn still_serves(gw: &Running) {
    let client = Client::new(gw.addr, &gw.pki.ca, Some(&gw.pki.dinkes), Version::HTTP_2);
    let answer = client.get("/dinkes/faskes").await.unwrap();
    assert_eq!(answer.status, 200);
}

/// Rapid reset: streams opened and cancelled at once cost the server work the client never
/// waits for. hyper's h2 counts streams reset before they were answered and sends GOAWAY
/// `ENHANCE_YOUR_CALM` long before 20,000 of them.
#[tokio::test]
async fn rapid_reset_is_answered_with_goaway() {
    let (gw, _recorder) = gateway().await;
    let client = Client::new(gw.addr, &gw.pki.ca, Some(&gw.pki.dinkes), Version::HTTP_2);
    let tls = client.connect(b"h2").await.unwrap();
    let (read, mut write) = tokio::io::split(tls);
    let reader = tokio::spawn(goaway(read));
    write.write_all(PREFACE).await.unwrap();
    write.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let block = request_block();
    let mut opened = 0u32;
    'attack: for batch in 0..200u32 {
        let mut bytes = Vec::new();
        for i in 0..100u32 {
            let stream = 2 * (batch * 100 + i) + 1;
            bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, &block));
            bytes.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
        }
        if write.write_all(&bytes).await.is_err() || reader.is_finished() {
            break 'attack;
        }
        opened += 100;
    }
    let (last, code) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("no GOAWAY within 10 s")
        .unwrap()
        .expect("the connection ended without GOAWAY");
    assert_eq!(code, ENHANCE_YOUR_CALM, "after {opened} streams written");
    // The last stream the server processed: far short of the 20,000 opened.
    let processed = last.div_ceil(2);
    assert!(
        processed < 200,
        "the server processed {processed} reset streams"
    );
    still_serves(&gw).await;
}

/// CONTINUATION flood (CVE-2024-27316 and kin): a header block that never ends, in many small
/// frames. h2 refuses more CONTINUATION frames than the header size limit can need (about
/// seven here) with GOAWAY `ENHANCE_YOUR_CALM`, and no request comes of it.
#[tokio::test]
async fn a_continuation_flood_is_cut_off() {
    let (gw, recorder) = gateway().await;
    let client = Client::new(gw.addr, &gw.pki.ca, Some(&gw.pki.dinkes), Version::HTTP_2);
    let tls = client.connect(b"h2").await.unwrap();
    let (read, mut write) = tokio::io::split(tls);
    let reader = tokio::spawn(goaway(read));
    write.write_all(PREFACE).await.unwrap();
    write.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    // HEADERS without END_HEADERS, then CONTINUATION frames that never set it.
    write
        .write_all(&frame(HEADERS, END_STREAM, 1, &request_block()))
        .await
        .unwrap();
    let mut sent = 0;
    for i in 0..1000 {
        let piece = literal(&format!("x-flood-{i}"), &"a".repeat(64));
        if write
            .write_all(&frame(CONTINUATION, 0, 1, &piece))
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
        if reader.is_finished() {
            break;
        }
    }
    let (_, code) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the flood was not cut off within 10 s")
        .unwrap()
        .expect("the connection ended without GOAWAY");
    assert_eq!(code, ENHANCE_YOUR_CALM, "after {sent} frames written");
    assert_eq!(recorder.count(), 0, "a request came of the flood");
    still_serves(&gw).await;
}
