//! The tokenizer against OpenAI's (scripts/tokenizer_oracle.py writes the fixtures).

use clip_wgpu::text::{ClipTokenizer, CONTEXT_LENGTH, EOT, SOT};
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<serde_json::Value> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    s.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn check(file: &str, key: &str) -> (usize, usize) {
    let tok = ClipTokenizer::bundled();
    let rows = fixture(file);
    let mut bad = Vec::new();
    for r in &rows {
        let text = r["text"].as_str().unwrap();
        let want = ids(&r[key]);
        let got = tok.encode(text);
        if got != want {
            bad.push(format!("  {text:?}\n    want {want:?}\n    got  {got:?}"));
        }
    }
    assert!(bad.is_empty(), "{file}: {} of {} differ from OpenAI's ids:\n{}", bad.len(), rows.len(), bad.join("\n"));
    (rows.len(), bad.len())
}

#[test]
fn corpus_identical_to_openai() {
    let (n, _) = check("tokenizer_corpus.jsonl", "ids");
    assert!(n >= 250, "corpus has only {n} strings");
}

/// Strings where ftfy's mojibake repair (not reproduced) changes the reference:
/// we must equal the reference run with `fix_encoding=False`.
#[test]
fn mojibake_strings_match_reference_without_repair() {
    check("tokenizer_mojibake.jsonl", "ids_no_mojibake_repair");
}

#[test]
fn batch_equals_single() {
    let tok = ClipTokenizer::bundled();
    let texts = ["a photo of a cat", "", "Tom &amp; Jerry", "ΟΔΥΣΣΕΥΣ"];
    let batch = tok.encode_batch(&texts);
    for (t, b) in texts.iter().zip(&batch) {
        assert_eq!(&tok.encode(t), b);
    }
}

#[test]
fn empty_and_whitespace() {
    let tok = ClipTokenizer::bundled();
    assert_eq!(tok.encode(""), vec![SOT, EOT]);
    assert_eq!(tok.encode(" \t\n\u{3000}\u{a0}"), vec![SOT, EOT]);
}

#[test]
fn truncation_keeps_eot_last() {
    let tok = ClipTokenizer::bundled();
    let a = 320; // "a</w>"
    for (n, len) in [(74, 76), (75, 77), (76, 77), (77, 77), (500, 77)] {
        let ids = tok.encode(&"a ".repeat(n));
        assert_eq!(ids.len(), len, "{n} words");
        assert_eq!(ids[0], SOT);
        assert_eq!(*ids.last().unwrap(), EOT);
        assert!(ids[1..ids.len() - 1].iter().all(|&x| x == a));
        assert!(ids.len() <= CONTEXT_LENGTH);
    }
}

#[test]
fn from_file_and_errors() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/tokenizer.json");
    let t = ClipTokenizer::from_file(&p).unwrap();
    assert_eq!(t.encode("a diagram"), ClipTokenizer::bundled().encode("a diagram"));
    let e = ClipTokenizer::from_file(&p.with_file_name("does-not-exist.json")).unwrap_err();
    assert!(e.to_string().contains("does-not-exist.json"), "{e}");
    let e = ClipTokenizer::from_bytes(b"[1, 2").unwrap_err();
    assert!(e.to_string().contains("invalid JSON"), "{e}");
}
