//! The AWS event-stream binary framing (`application/vnd.amazon.eventstream`) that Bedrock's
//! `ConverseStream` answers in, written from AWS's description of the encoding ("Event stream
//! encoding", in the Amazon Transcribe and Amazon Lex V2 developer guides, which document the
//! format all event-stream APIs share).
//!
//! A message is, all integers big-endian:
//!
//! ```text
//! total length (u32) | headers length (u32) | prelude CRC (u32, of the 8 bytes before it)
//! headers | payload | message CRC (u32, of every byte before it)
//! ```
//!
//! The total length counts the whole message, both CRCs included (16 bytes of overhead). Each
//! header is `name length (u8) | name | value type (u8) | value`; the mock sends string values
//! only (type 7: `length (u16) | UTF-8 bytes`), as Bedrock does. Both CRCs are CRC-32 (the
//! gzip / IEEE polynomial).

/// Header value type 7: a UTF-8 string with a 2-byte length.
const STRING: u8 = 7;

/// One message with these (name, string value) headers and payload.
pub(crate) fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        let name = &name.as_bytes()[..name.len().min(255)];
        let value = &value.as_bytes()[..value.len().min(usize::from(u16::MAX))];
        h.push(name.len() as u8);
        h.extend_from_slice(name);
        h.push(STRING);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value);
    }
    let total = 16 + h.len() + payload.len();
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_be_bytes());
    m.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&m);
    m.extend_from_slice(&prelude_crc.to_be_bytes());
    m.extend_from_slice(&h);
    m.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&m);
    m.extend_from_slice(&message_crc.to_be_bytes());
    m
}

/// An event message: `:event-type`, `:content-type: application/json`, `:message-type: event`.
pub(crate) fn event(event_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

/// An exception message: `:exception-type`, `:content-type: application/json`,
/// `:message-type: exception`; the payload is `{"message": ...}`.
pub(crate) fn exception(exception_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        payload,
    )
}

/// A decoded message (tests).
#[cfg(test)]
#[derive(Debug, PartialEq)]
pub(crate) struct Message {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) payload: Vec<u8>,
}

#[cfg(test)]
impl Message {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

/// Decode a whole stream, checking both CRCs of every message (tests). `Err` names the first
/// problem; a stream ending inside a message is an error.
#[cfg(test)]
pub(crate) fn decode_all(mut buf: &[u8]) -> Result<Vec<Message>, String> {
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf.len() < 12 {
            return Err(format!("truncated prelude ({} bytes)", buf.len()));
        }
        let (total, hlen) = (be(&buf[0..4]) as usize, be(&buf[4..8]) as usize);
        if crc32fast::hash(&buf[0..8]) != be(&buf[8..12]) {
            return Err("bad prelude CRC".to_owned());
        }
        if total < 16 + hlen {
            return Err("lengths disagree".to_owned());
        }
        if buf.len() < total {
            return Err(format!(
                "truncated message ({} of {total} bytes)",
                buf.len()
            ));
        }
        if crc32fast::hash(&buf[..total - 4]) != be(&buf[total - 4..total]) {
            return Err("bad message CRC".to_owned());
        }
        let mut h = &buf[12..12 + hlen];
        let mut headers = Vec::new();
        while !h.is_empty() {
            let n = usize::from(h[0]);
            let name = String::from_utf8_lossy(&h[1..1 + n]).into_owned();
            if h[1 + n] != STRING {
                return Err(format!("header {name}: type {} is not a string", h[1 + n]));
            }
            let len = usize::from(u16::from_be_bytes([h[2 + n], h[3 + n]]));
            let value = String::from_utf8_lossy(&h[4 + n..4 + n + len]).into_owned();
            headers.push((name, value));
            h = &h[4 + n + len..];
        }
        out.push(Message {
            headers,
            payload: buf[12 + hlen..total - 4].to_vec(),
        });
        buf = &buf[total..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_published_encoding() {
        // A payload with no headers, and with one string header, as encoded by an independent
        // implementation of the format (the `event_stream` Elixir package's documented example).
        assert_eq!(
            encode(&[], br#"{"foo": "bar"}"#),
            [
                0, 0, 0, 30, 0, 0, 0, 0, 186, 242, 246, 138, 123, 34, 102, 111, 111, 34, 58, 32,
                34, 98, 97, 114, 34, 125, 174, 114, 88, 228
            ]
        );
        let m = encode(
            &[("content-type", "application/json")],
            br#"{"foo": "bar"}"#,
        );
        assert_eq!(&m[..12], &[0, 0, 0, 62, 0, 0, 0, 32, 64, 93, 249, 70]);
        assert_eq!(&m[m.len() - 4..], &[111, 162, 191, 59]);
    }

    #[test]
    fn round_trip_and_crc_checks() {
        let mut stream = event("messageStart", br#"{"role":"assistant"}"#);
        stream.extend(exception(
            "throttlingException",
            br#"{"message":"slow down"}"#,
        ));
        let msgs = decode_all(&stream).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].header(":event-type"), Some("messageStart"));
        assert_eq!(msgs[0].header(":message-type"), Some("event"));
        assert_eq!(msgs[0].header(":content-type"), Some("application/json"));
        assert_eq!(msgs[0].json()["role"], "assistant");
        assert_eq!(
            msgs[1].header(":exception-type"),
            Some("throttlingException")
        );
        assert_eq!(msgs[1].header(":message-type"), Some("exception"));
        // Any flipped bit is caught.
        let mut bad = stream.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(decode_all(&bad).unwrap_err(), "bad message CRC");
        let mut bad = stream.clone();
        bad[20] ^= 1;
        assert!(decode_all(&bad).is_err());
        assert!(decode_all(&stream[..stream.len() - 3])
            .unwrap_err()
            .starts_with("truncated"));
    }
}
