//! The stream translators and the usage-event filter: any bytes, split anywhere, in either
//! direction (Anthropic events → OpenAI chunks, OpenAI chunks → Anthropic events); never a panic,
//! and memory bounded by what they were fed.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use llmproxy::providers::anthropic::inbound::ChatStreamToMessages;
use llmproxy::providers::anthropic::StreamTranslator;
use llmproxy::providers::usage::UsageEventStrip;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    let mut to_openai = StreamTranslator::new("m", data.len() % 2 == 0);
    let mut to_anthropic = ChatStreamToMessages::new("m").with_input_estimate(data.len() as u64);
    let mut strip = UsageEventStrip::default();
    let mut out = 0usize;
    for chunk in data.chunks(split) {
        out += to_openai.feed(chunk).len();
        out += to_anthropic.feed(chunk).len();
        if let Some(b) = strip.filter(Bytes::copy_from_slice(chunk)) {
            out += b.len();
        }
    }
    out += to_openai.finish().len();
    out += to_anthropic.finish().len();
    let _ = strip.finish();
    let _ = (to_openai.usage(), to_anthropic.usage());
    // Output grows with input (events are re-encoded, a few fixed events added), never without it.
    assert!(out <= 64 * data.len() + 64 * 1024, "{out} bytes out of {}", data.len());
});
