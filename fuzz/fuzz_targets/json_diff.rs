//! Differential: llmproxy's top-level JSON scanner accepts exactly what serde_json accepts (for bodies
//! within the nesting limit), and splits them into the same members.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmproxy::body::scan::top_level;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

const MAX: usize = 64;

struct Fields;
impl<'de> Visitor<'de> for Fields {
    type Value = Vec<(String, &'de RawValue)>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::new();
        while let Some((k, x)) = m.next_entry::<String, &'de RawValue>()? {
            v.push((k, x));
        }
        Ok(v)
    }
}

fn reference(b: &[u8]) -> Option<Vec<(String, String)>> {
    let mut de = serde_json::Deserializer::from_slice(b);
    let f = de.deserialize_map(Fields).ok()?;
    de.end().ok()?;
    Some(f.into_iter().map(|(k, v)| (k, v.get().to_string())).collect())
}

/// Nesting depth, strings skipped (only meaningful for valid JSON).
fn depth(b: &[u8]) -> usize {
    let (mut d, mut max, mut s, mut e) = (0usize, 0usize, false, false);
    for &c in b {
        if s {
            if e {
                e = false
            } else if c == b'\\' {
                e = true
            } else if c == b'"' {
                s = false
            }
            continue;
        }
        match c {
            b'"' => s = true,
            b'[' | b'{' => {
                d += 1;
                max = max.max(d)
            }
            b']' | b'}' => d = d.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fuzz_target!(|data: &[u8]| {
    let ours = top_level(data, MAX);
    let theirs = reference(data);
    match (&ours, &theirs) {
        (Ok(a), Some(b)) => {
            let a: Vec<(String, String)> = a.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            assert_eq!(&a, b);
        }
        (Err(e), Some(_)) => assert!(e.too_deep && depth(data) > MAX, "we refused valid JSON: {e:?}"),
        (Ok(_), None) => panic!("we accepted what serde_json refuses"),
        (Err(_), None) => {}
    }
});
