//! `upstreams[].prompt_template` — how a text-generation server's chat prompt is written (LiteLLM's
//! `initial_prompt_value`, `roles`, `final_prompt_value`, `bos_token`, `eos_token`). The rendering
//! itself is `providers::text_generation::render`.

use super::reader::{Map, Node, Reader};
use super::upstreams::Provider;

/// The text around one role's messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleTemplate {
    pub pre_message: String,
    pub post_message: String,
}

/// A chat prompt template. A role the template does not name gets no text around its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    pub initial_prompt_value: String,
    pub system: RoleTemplate,
    pub user: RoleTemplate,
    pub assistant: RoleTemplate,
    pub final_prompt_value: String,
    pub bos_token: String,
    pub eos_token: String,
}

impl PromptTemplate {
    /// The template used when an upstream names none: ChatML (`<|im_start|>{role}\n...<|im_end|>\n`,
    /// the prompt ending in `<|im_start|>assistant\n`), which most instruction-tuned open models
    /// understand.
    pub fn chatml() -> PromptTemplate {
        let role = |r: &str| RoleTemplate {
            pre_message: format!("<|im_start|>{r}\n"),
            post_message: "<|im_end|>\n".into(),
        };
        PromptTemplate {
            initial_prompt_value: String::new(),
            system: role("system"),
            user: role("user"),
            assistant: role("assistant"),
            final_prompt_value: "<|im_start|>assistant\n".into(),
            bos_token: String::new(),
            eos_token: String::new(),
        }
    }
}

const KEYS: &[&str] = &[
    "initial_prompt_value",
    "roles",
    "final_prompt_value",
    "bos_token",
    "eos_token",
];
const ROLES: &[&str] = &["system", "user", "assistant"];

/// `prompt_template` of an upstream: read for `text_generation` (ChatML, with a warning, when it
/// is absent), refused for the other providers.
pub fn read_for(r: &mut Reader, m: &Map, provider: Provider) -> Option<PromptTemplate> {
    let path = format!("{}.prompt_template", m.path());
    if provider != Provider::TextGeneration {
        if m.has("prompt_template") {
            r.error(&path, "only used by provider `text_generation`");
        }
        return None;
    }
    match m.with(r, "prompt_template", read) {
        Some(t) => Some(t),
        None if m.has("prompt_template") => None,
        None => {
            r.warn(
                &path,
                "not set: chat requests are rendered as ChatML (<|im_start|>role ... <|im_end|>); set the model's own template",
            );
            Some(PromptTemplate::chatml())
        }
    }
}

fn read(r: &mut Reader, n: Node) -> Option<PromptTemplate> {
    let m = n.map(r, KEYS)?;
    let text = |r: &mut Reader, key: &str| m.with(r, key, |r, n| n.string(r)).unwrap_or_default();
    let initial_prompt_value = text(r, "initial_prompt_value");
    let final_prompt_value = text(r, "final_prompt_value");
    let bos_token = text(r, "bos_token");
    let eos_token = text(r, "eos_token");
    let roles_path = format!("{}.roles", m.path());
    let roles = m
        .raw("roles")
        .and_then(|v| Node::new(v, &roles_path).map(r, ROLES));
    let Some(roles) = roles else {
        r.error(
            &roles_path,
            "a prompt template needs `roles` ({system, user, assistant} each with pre_message / post_message)",
        );
        return None;
    };
    let role = |r: &mut Reader, key: &str| {
        roles
            .with(r, key, |r, n| {
                let rm = n.map(r, &["pre_message", "post_message"])?;
                Some(RoleTemplate {
                    pre_message: rm
                        .with(r, "pre_message", |r, n| n.string(r))
                        .unwrap_or_default(),
                    post_message: rm
                        .with(r, "post_message", |r, n| n.string(r))
                        .unwrap_or_default(),
                })
            })
            .unwrap_or_default()
    };
    let (system, user, assistant) = (role(r, "system"), role(r, "user"), role(r, "assistant"));
    if [&system, &user, &assistant]
        .iter()
        .all(|t| t.pre_message.is_empty() && t.post_message.is_empty())
    {
        r.error(
            &roles_path,
            "no role has a pre_message or post_message: the messages would run together",
        );
        return None;
    }
    Some(PromptTemplate {
        initial_prompt_value,
        system,
        user,
        assistant,
        final_prompt_value,
        bos_token,
        eos_token,
    })
}
