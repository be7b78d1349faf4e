//! CLIP's tokenizer, identical to OpenAI's (`clip/simple_tokenizer.py`).
//!
//! Pipeline: [`clean`] (ftfy without mojibake repair, `html.unescape` twice,
//! whitespace collapse, Python `str.lower()`), then OpenAI's pre-tokeniser
//! (`<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`,
//! case-insensitive), then byte-level BPE with the merges of `tokenizer.json`
//! (run by the `tokenizers` crate's BPE model only: the HF normalizer, pre-tokeniser
//! and added-token matching differ from OpenAI's and are not used).
//!
//! Output: `[SOT, …, EOT]`, unpadded; longer than 77 → the first 76 ids and EOT
//! (`clip.tokenize(truncate=True)` / `open_clip.tokenize`).
//!
//! Special-token text in the input: OpenAI's pattern matches `<|startoftext|>` and
//! `<|endoftext|>` in the (lower-cased) text and maps them to 49406 / 49407, but
//! only where a pre-token can start (`!<|endoftext|>` is punctuation `!<|`, the
//! word `endoftext` and `|>`). We do the same. (open_clip's copy spells its
//! special tokens `<start_of_text>` / `<end_of_text>` instead; the corpus records
//! its ids where they differ.)

mod clean;
#[rustfmt::skip]
mod tables;

pub use clean::{clean, fix_text, html_unescape, nfc_as_python, py_lower, whitespace_clean};

use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::{Model, ModelWrapper};

/// `<|startoftext|>`
pub const SOT: u32 = 49406;
/// `<|endoftext|>`
pub const EOT: u32 = 49407;
/// CLIP's text context: 77 positions.
pub const CONTEXT_LENGTH: usize = 77;
/// Vocabulary size of CLIP's BPE (256 bytes ×2, 48,894 merges, 2 specials).
pub const VOCAB_SIZE: usize = 49408;

const SOT_TEXT: &str = "<|startoftext|>";
const EOT_TEXT: &str = "<|endoftext|>";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer.json at {path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tokenizer.json at {path}: invalid JSON: {message}")]
    InvalidJson { path: String, message: String },
    #[error("tokenizer.json at {path}: not a CLIP tokenizer: {reason}")]
    NotClip { path: String, reason: String },
}

/// OpenAI-identical CLIP tokenizer. `Send + Sync`; cheap to share behind an `Arc`.
#[derive(Clone)]
pub struct ClipTokenizer {
    bpe: BPE,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer").field("vocab_size", &self.bpe.get_vocab_size()).finish()
    }
}

static BUNDLED: &[u8] = include_bytes!("../../weights/tokenizer.json");

impl ClipTokenizer {
    /// The tokenizer shipped in `weights/tokenizer.json` (OpenAI's
    /// `bpe_simple_vocab_16e6` in HF format).
    pub fn bundled() -> Self {
        Self::parse(BUNDLED, "<bundled>").expect("bundled tokenizer.json is a valid CLIP tokenizer")
    }

    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io { path: p.clone(), source })?;
        Self::parse(&bytes, &p)
    }

    pub fn from_bytes(json: &[u8]) -> Result<Self, TokenizerError> {
        Self::parse(json, "<bytes>")
    }

    fn parse(json: &[u8], path: &str) -> Result<Self, TokenizerError> {
        let not_clip = |reason: String| TokenizerError::NotClip { path: path.to_string(), reason };
        let v: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| TokenizerError::InvalidJson { path: path.to_string(), message: e.to_string() })?;
        let model = v.get("model").ok_or_else(|| not_clip("no \"model\"".into()))?;
        if let Some(t) = model.get("type").and_then(|t| t.as_str()).filter(|t| *t != "BPE") {
            return Err(not_clip(format!("model is not BPE (it is {t})")));
        }
        // CLIP's BPE has no continuing-subword prefix. The `tokenizers` crate slices every merge's
        // second part by the prefix's length while building the model and panics when a part
        // is shorter (found by fuzzing): refuse a prefix before it gets there.
        match model.get("continuing_subword_prefix") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(p)) if p.is_empty() => {}
            Some(other) => {
                return Err(not_clip(format!("BPE continuing_subword_prefix is {other} (CLIP's BPE has none)")))
            }
        }
        // Any other panic inside the deserializer is an error for this file, not a crash.
        let mw: ModelWrapper = std::panic::catch_unwind(|| serde_json::from_value::<ModelWrapper>(model.clone()))
            .map_err(|_| not_clip("the tokenizers crate could not build this model".into()))?
            .map_err(|e| not_clip(format!("model is not a tokenizers model: {e}")))?;
        let ModelWrapper::BPE(bpe) = mw else {
            return Err(not_clip("model is not BPE".into()));
        };
        if bpe.end_of_word_suffix.as_deref() != Some("</w>") {
            return Err(not_clip("BPE end_of_word_suffix is not \"</w>\"".into()));
        }
        if bpe.dropout.is_some_and(|d| d > 0.0) {
            return Err(not_clip("BPE dropout is set".into()));
        }
        // The special tokens live in the vocabulary or in added_tokens.
        let added = |content: &str| -> Option<u32> {
            v.get("added_tokens")?.as_array()?.iter().find_map(|t| {
                (t.get("content")?.as_str()? == content).then(|| t.get("id")?.as_u64().map(|x| x as u32))?
            })
        };
        for (text, id) in [(SOT_TEXT, SOT), (EOT_TEXT, EOT)] {
            match bpe.token_to_id(text).or_else(|| added(text)) {
                None => return Err(not_clip(format!("{text} missing"))),
                Some(got) if got != id => return Err(not_clip(format!("{text} has id {got}, expected {id}"))),
                Some(_) => {}
            }
        }
        let n = bpe.get_vocab_size();
        if n != VOCAB_SIZE {
            return Err(not_clip(format!("vocabulary has {n} entries, expected {VOCAB_SIZE}")));
        }
        // Byte-level BPE must cover every byte, alone and word-final: then no
        // word can ever fall back to the unknown token.
        for &c in byte_encoder().iter() {
            let mut s = String::from(c);
            if bpe.token_to_id(&s).is_none() {
                return Err(not_clip(format!("byte symbol {c:?} missing from the vocabulary")));
            }
            s.push_str("</w>");
            if bpe.token_to_id(&s).is_none() {
                return Err(not_clip(format!("byte symbol {s:?} missing from the vocabulary")));
            }
        }
        Ok(Self { bpe })
    }

    /// Token ids of one text: `[SOT, …, EOT]`, at most 77, unpadded.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = clean(text);
        let mut ids = Vec::with_capacity(16);
        ids.push(SOT);
        let enc = byte_encoder();
        let mut word = String::new();
        for piece in pretokenize(&cleaned) {
            if ids.len() >= CONTEXT_LENGTH {
                break; // everything further is truncated away
            }
            match piece {
                Piece::Special(id) => ids.push(id),
                Piece::Word(w) => {
                    word.clear();
                    word.extend(w.bytes().map(|b| enc[b as usize]));
                    let toks = self.bpe.tokenize(&word).expect("byte-level BPE cannot fail");
                    ids.extend(toks.iter().map(|t| t.id));
                }
            }
        }
        ids.push(EOT);
        if ids.len() > CONTEXT_LENGTH {
            ids.truncate(CONTEXT_LENGTH);
            ids[CONTEXT_LENGTH - 1] = EOT;
        }
        ids
    }

    pub fn encode_batch(&self, texts: &[&str]) -> Vec<Vec<u32>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }

    /// Token ids padded with zeros to 77 (the layout `clip.tokenize` returns).
    pub fn encode_padded(&self, text: &str) -> [u32; CONTEXT_LENGTH] {
        let mut out = [0u32; CONTEXT_LENGTH];
        let ids = self.encode(text);
        out[..ids.len()].copy_from_slice(&ids);
        out
    }
}

/// GPT-2 / CLIP `bytes_to_unicode`.
fn byte_encoder() -> &'static [char; 256] {
    static T: std::sync::OnceLock<[char; 256]> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = ['\0'; 256];
        let mut n = 0u32;
        for b in 0..256u32 {
            let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
            t[b as usize] = if printable {
                char::from_u32(b).unwrap()
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap()
            };
        }
        t
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Special(u32),
    Word(&'a str),
}

const CLASS_L: u8 = 1;
const CLASS_N: u8 = 2;
const CLASS_P: u8 = 4;

fn class(c: char) -> u8 {
    if c.is_ascii() {
        return match c {
            'a'..='z' | 'A'..='Z' => CLASS_L,
            '0'..='9' => CLASS_N,
            '!'..='~' => CLASS_P,
            _ => table_class(c),
        };
    }
    table_class(c)
}

fn table_class(c: char) -> u8 {
    let cp = c as u32;
    let t = &tables::PRETOKEN_CLASS;
    match t.binary_search_by(|&(s, _)| s.cmp(&cp)) {
        Ok(i) => t[i].1,
        Err(i) => t[i - 1].1,
    }
}

/// Case-insensitive (`re.IGNORECASE`, simple case folding) match of an ASCII
/// lower-case literal at the start of `s`, on text that is already lower-cased:
/// the only other code point that folds onto one of the literal's letters is
/// U+017F `ſ` (≡ `s`). Returns the matched length in bytes.
fn match_literal(s: &str, lit: &str) -> Option<usize> {
    let mut len = 0;
    let mut chars = s.chars();
    for l in lit.chars() {
        let c = chars.next()?;
        let ok = c.to_ascii_lowercase() == l || (l == 's' && c == '\u{17f}');
        if !ok {
            return None;
        }
        len += c.len_utf8();
    }
    Some(len)
}

/// OpenAI's `re.findall(pat, text)`, special tokens resolved.
fn pretokenize(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    let b = text.as_bytes();
    while i < text.len() {
        let rest = &text[i..];
        let c = rest.chars().next().unwrap();
        if c == '<' {
            let mut hit = None;
            for (lit, id) in [(SOT_TEXT, SOT), (EOT_TEXT, EOT)] {
                if let Some(n) = match_literal(rest, lit) {
                    hit = Some((n, id));
                    break;
                }
            }
            if let Some((n, id)) = hit {
                // OpenAI's BPE cache only knows the exact spelling; `ſ` variants are BPE'd.
                out.push(if &rest[..n] == if id == SOT { SOT_TEXT } else { EOT_TEXT } {
                    Piece::Special(id)
                } else {
                    Piece::Word(&rest[..n])
                });
                i += n;
                continue;
            }
        }
        if b[i] == b'\'' {
            let mut hit = None;
            for lit in ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"] {
                if let Some(n) = match_literal(rest, lit) {
                    hit = Some(n);
                    break;
                }
            }
            if let Some(n) = hit {
                out.push(Piece::Word(&rest[..n]));
                i += n;
                continue;
            }
        }
        let k = class(c);
        let n = match k {
            CLASS_L | CLASS_P => rest.chars().take_while(|&d| class(d) == k).map(char::len_utf8).sum(),
            CLASS_N => c.len_utf8(),
            _ => {
                i += c.len_utf8();
                continue;
            }
        };
        out.push(Piece::Word(&rest[..n]));
        i += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(t: &str) -> Vec<String> {
        pretokenize(t)
            .into_iter()
            .map(|p| match p {
                Piece::Special(id) => format!("#{id}"),
                Piece::Word(w) => w.to_string(),
            })
            .collect()
    }

    #[test]
    fn pretokenizer_matches_openai_pattern() {
        assert_eq!(words("a photo of a cat."), ["a", "photo", "of", "a", "cat", "."]);
        assert_eq!(words("it's 42!"), ["it", "'s", "4", "2", "!"]);
        assert_eq!(words("a<|endoftext|>b"), ["a", "#49407", "b"]);
        assert_eq!(words("!<|endoftext|>"), ["!<|", "endoftext", "|>"]);
        assert_eq!(words("<|ſtartoftext|>"), ["<|ſtartoftext|>"]);
        assert_eq!(words("it'ſ"), ["it", "'ſ"]);
        assert_eq!(words("x\u{345}y"), ["x", "y"]);
    }

    #[test]
    fn bundled_basics() {
        let t = ClipTokenizer::bundled();
        assert_eq!(t.encode(""), vec![SOT, EOT]);
        assert_eq!(t.encode("   \t\n"), vec![SOT, EOT]);
        assert_eq!(t.encode("a photo of a cat"), vec![SOT, 320, 1125, 539, 320, 2368, EOT]);
        assert_eq!(t.encode("<|endoftext|>"), vec![SOT, EOT, EOT]);
        let long = t.encode(&"a ".repeat(100));
        assert_eq!(long.len(), CONTEXT_LENGTH);
        assert_eq!(long[76], EOT);
        assert_eq!(long[75], 320);
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ClipTokenizer>();
    }

    #[test]
    fn rejects_non_clip() {
        let e = ClipTokenizer::from_bytes(b"{not json").unwrap_err().to_string();
        assert!(e.contains("invalid JSON"), "{e}");
        let e = ClipTokenizer::from_bytes(b"{}").unwrap_err().to_string();
        assert!(e.contains("not a CLIP tokenizer"), "{e}");
        // fuzz/artifacts crash-c3b61ee9: a prefix longer than a merge part made `tokenizers` panic
        let e = ClipTokenizer::from_bytes(
            br#"{"model": {"type": "BPE", "dropout": null, "unk_tokEn": null, "continuing_subword_prefix": "$</w>", "fuse_unk": false, "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("continuing_subword_prefix is \"$</w>\""), "{e}");
        let mut v: serde_json::Value = serde_json::from_slice(BUNDLED).unwrap();
        v["model"]["vocab"].as_object_mut().unwrap().remove("<|endoftext|>");
        v["added_tokens"] = serde_json::json!([]);
        let e = ClipTokenizer::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap_err().to_string();
        assert!(e.contains("<|endoftext|> missing"), "{e}");
    }
}
