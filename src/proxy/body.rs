//! Reading a request body from the client: the size limit (413 beyond it), `Content-Encoding`
//! (gzip, deflate, zstd, br) decoded with the limit applied to the decoded size (a compression bomb
//! is a 413, never a big allocation), other encodings refused with 415. A body that cannot be read
//! (a broken chunked framing, a client that stopped midway) also closes the connection: what follows
//! on it cannot be trusted to start a request.

use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use std::io::Read;

/// A request body encoding the gateway decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Zstd,
    Brotli,
}

/// Read the whole request body, decoded, refusing more than `limit` bytes (413).
pub async fn read(session: &mut Session, limit: usize) -> Result<Bytes, GatewayError> {
    let coding = match coding(session.req_header()) {
        Ok(c) => c,
        Err(e) => {
            // The body is not read: the connection cannot carry another request.
            session.set_keepalive(None);
            return Err(e);
        }
    };
    let raw = match read_raw(session, limit).await {
        Ok(b) => b,
        Err(e) => {
            session.set_keepalive(None);
            return Err(e);
        }
    };
    match coding {
        None => Ok(raw),
        Some(c) => decode(c, &raw, limit),
    }
}

/// The request's `Content-Encoding`: none (or `identity`), one the gateway decodes, or 415.
fn coding(h: &pingora::http::RequestHeader) -> Result<Option<Coding>, GatewayError> {
    let Some(v) = h.headers.get(http::header::CONTENT_ENCODING) else {
        return Ok(None);
    };
    let v = v.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match v.as_str() {
        "" | "identity" => Ok(None),
        "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
        "deflate" => Ok(Some(Coding::Deflate)),
        "zstd" => Ok(Some(Coding::Zstd)),
        "br" => Ok(Some(Coding::Brotli)),
        other => Err(GatewayError::UnsupportedMediaType(format!(
            "Content-Encoding `{}` is not supported (gzip, deflate, zstd, br or none)",
            other.chars().take(40).collect::<String>()
        ))),
    }
}

/// Decode `raw`, stopping past `limit` decoded bytes (413).
fn decode(c: Coding, raw: &[u8], limit: usize) -> Result<Bytes, GatewayError> {
    let mut out = Vec::with_capacity((raw.len() * 4).min(limit));
    let cap = limit as u64 + 1;
    let res = match c {
        Coding::Gzip => flate2::read::MultiGzDecoder::new(raw)
            .take(cap)
            .read_to_end(&mut out),
        // HTTP's `deflate` is the zlib format; some clients send raw deflate.
        Coding::Deflate if raw.first().is_some_and(|b| b & 0x0f == 8) => {
            flate2::read::ZlibDecoder::new(raw)
                .take(cap)
                .read_to_end(&mut out)
        }
        Coding::Deflate => flate2::read::DeflateDecoder::new(raw)
            .take(cap)
            .read_to_end(&mut out),
        Coding::Zstd => match zstd::stream::read::Decoder::new(raw) {
            Ok(d) => d.take(cap).read_to_end(&mut out),
            Err(e) => Err(e),
        },
        Coding::Brotli => brotli::Decompressor::new(raw, 4096)
            .take(cap)
            .read_to_end(&mut out),
    };
    match res {
        Ok(_) if out.len() > limit => Err(GatewayError::RequestTooLarge { limit }),
        Ok(_) => Ok(Bytes::from(out)),
        Err(e) => Err(GatewayError::invalid(
            format!("The request body could not be decoded ({c:?}): {e}"),
            None,
        )),
    }
}

/// Read the body as sent, refusing more than `limit` bytes (413).
async fn read_raw(session: &mut Session, limit: usize) -> Result<Bytes, GatewayError> {
    let too_large = || GatewayError::RequestTooLarge { limit };
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .write_continue_response()
            .await
            .map_err(|e| GatewayError::invalid(format!("cannot continue: {e}"), None))?;
    }
    let read_err = |e: Box<pingora::Error>| {
        GatewayError::invalid(
            format!(
                "The request body could not be read ({})",
                e.etype().as_str()
            ),
            None,
        )
    };
    // The common case is one chunk: keep it without copying.
    let Some(first) = session.read_request_body().await.map_err(read_err)? else {
        return Ok(Bytes::new());
    };
    if first.len() > limit {
        return Err(too_large());
    }
    let Some(second) = session.read_request_body().await.map_err(read_err)? else {
        return Ok(first);
    };
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(first.len() * 4).min(limit));
    buf.extend_from_slice(&first);
    let mut next = Some(second);
    while let Some(chunk) = next {
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
        next = session.read_request_body().await.map_err(read_err)?;
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn decodes_each_coding_within_the_limit() {
        let body = br#"{"model":"m","messages":[]}"#;
        assert_eq!(&decode(Coding::Gzip, &gzip(body), 1024).unwrap()[..], body);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(body).unwrap();
        assert_eq!(
            &decode(Coding::Deflate, &z.finish().unwrap(), 1024).unwrap()[..],
            body
        );
        let zs = zstd::stream::encode_all(&body[..], 1).unwrap();
        assert_eq!(&decode(Coding::Zstd, &zs, 1024).unwrap()[..], body);
        let mut br = Vec::new();
        brotli::CompressorReader::new(&body[..], 4096, 5, 22)
            .read_to_end(&mut br)
            .unwrap();
        assert_eq!(&decode(Coding::Brotli, &br, 1024).unwrap()[..], body);
    }

    #[test]
    fn a_bomb_is_too_large_and_garbage_is_invalid() {
        let bomb = gzip(&vec![b'a'; 10 << 20]);
        assert!(bomb.len() < 64 * 1024);
        let e = decode(Coding::Gzip, &bomb, 1 << 20).unwrap_err();
        assert_eq!(e.status(), 413);
        let e = decode(Coding::Gzip, b"not gzip at all", 1024).unwrap_err();
        assert_eq!(e.status(), 400);
    }
}
