//! OpenAI CLIP's text cleaning, reproduced in Rust.
//!
//! The reference (`clip/simple_tokenizer.py`, identical in open_clip) does
//!
//! ```python
//! text = ftfy.fix_text(text)
//! text = html.unescape(html.unescape(text)).strip()
//! text = re.sub(r'\s+', ' ', text).strip()        # open_clip: " ".join(text.split())
//! text = text.lower()
//! ```
//!
//! Every step is reproduced with Python's semantics (see [`clean`]), driven by
//! tables generated from the reference interpreter (`scripts/tokenizer_oracle.py
//! tables`: Python 3.11 / Unicode 14.0 for `str.lower`, `str.isspace` and ftfy's
//! width table; the `regex` module's own Unicode tables for the pre-tokeniser).
//!
//! ## ftfy.fix_text (ftfy 6.3): what is reproduced
//! `fix_text` splits the text after each `\n` (and every 1,000,000 code points),
//! and on each segment repeats, until nothing changes:
//! `unescape_html` → `fix_encoding` → `fix_c1_controls` → `fix_latin_ligatures` →
//! `fix_character_width` → `uncurl_quotes` → `fix_line_breaks` → `fix_surrogates` →
//! `remove_terminal_escapes` → `remove_control_chars` → NFC.
//! `unescape_html` is "auto": it is switched off for a segment containing `<` and,
//! as ftfy's loop re-assigns its config, for every later segment too.
//!
//! All of these are implemented except:
//! * `fix_encoding` (mojibake repair: re-decoding text such as `cafÃ©` → `café`,
//!   with its sub-steps `restore_byte_a0`, `replace_lossy_sequences`,
//!   `decode_inconsistent_utf8`). It only acts on text ftfy's heuristic `is_bad`
//!   flags as mojibake; on such text our ids follow the reference run with
//!   `fix_encoding=False` (tests/fixtures/tokenizer_mojibake.jsonl).
//! * `fix_surrogates`: a Rust `&str` cannot hold surrogate code points.
//!
//! ## Unicode versions
//! `str.lower()`, `str.isspace()`, ftfy's width map and the Final_Sigma context are
//! tabulated from Python 3.11 (Unicode 14.0); the `[\p{L}]` / `[\p{N}]` classes of
//! the pre-tokeniser from the `regex` module (which carries its own, newer, Unicode
//! tables), so both match the reference exactly. NFC comes from the
//! `unicode-normalization` crate (newer Unicode), with code points that Python's
//! database leaves unassigned treated as inert barriers, which reproduces Python's
//! NFC exactly (see [`nfc_as_python`]).

use super::tables;
use std::collections::HashMap;
use std::sync::OnceLock;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// OpenAI's full cleaning: `whitespace_clean(basic_clean(text)).lower()`.
///
/// `basic_clean` = `ftfy.fix_text` (without mojibake repair, see the module docs),
/// `html.unescape` twice, `str.strip()`; `whitespace_clean` collapses runs of
/// Python whitespace (`str.isspace`) into one space and strips; `lower` is Python's
/// `str.lower()` (full mappings, Final_Sigma).
pub fn clean(text: &str) -> String {
    let t = fix_text(text);
    let t = html_unescape(&html_unescape(&t));
    let t = whitespace_clean(&t);
    py_lower(&t)
}

fn in_ranges(table: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    match table.binary_search_by(|&(lo, _)| lo.cmp(&c)) {
        Ok(_) => true,
        Err(0) => false,
        Err(i) => c <= table[i - 1].1,
    }
}

/// Python's `str.isspace()`.
pub fn is_py_space(c: char) -> bool {
    if c.is_ascii() {
        return matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | '\x1c'..='\x1f' | ' ');
    }
    tables::PY_WHITESPACE.binary_search(&(c as u32)).is_ok()
}

/// `" ".join(text.split())` (== `re.sub(r'\s+', ' ', text).strip()` on cleaned text).
pub fn whitespace_clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for w in text.split(is_py_space).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

// ---------------------------------------------------------------- str.lower()

fn is_case_ignorable(c: char) -> bool {
    in_ranges(&tables::CASE_IGNORABLE, c)
}
/// Cased and not Case_Ignorable (the only cased-ness the Final_Sigma rule reads).
fn is_cased(c: char) -> bool {
    in_ranges(&tables::CASED, c)
}

fn lower_char(c: char) -> char {
    let cp = c as u32;
    match tables::PY_LOWER.binary_search_by(|&(k, _)| k.cmp(&cp)) {
        Ok(i) => char::from_u32(tables::PY_LOWER[i].1).unwrap_or(c),
        Err(_) => c,
    }
}

/// Python's `str.lower()` (Unicode 14.0 as in Python 3.11): full case mapping
/// (`İ` → `i̇`) and the Final_Sigma rule for `Σ` (CPython's `handle_capital_sigma`).
pub fn py_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        match c {
            'A'..='Z' => out.push(c.to_ascii_lowercase()),
            _ if c.is_ascii() => out.push(c),
            '\u{130}' => out.push_str("i\u{307}"),
            '\u{3a3}' => {
                // \p{cased}\p{case-ignorable}* Σ !(\p{case-ignorable}* \p{cased})
                let before = chars[..i].iter().rev().find(|&&p| !is_case_ignorable(p));
                let mut fin = matches!(before, Some(&p) if is_cased(p));
                if fin {
                    let after = chars[i + 1..].iter().find(|&&n| !is_case_ignorable(n));
                    fin = !matches!(after, Some(&n) if is_cased(n));
                }
                out.push(if fin { '\u{3c2}' } else { '\u{3c3}' });
            }
            _ => out.push(lower_char(c)),
        }
    }
    out
}

// ------------------------------------------------------------ html.unescape()

fn entity(name_with_amp: &str) -> Option<&'static str> {
    htmlize::ENTITIES.get(name_with_amp.as_bytes()).map(|v| std::str::from_utf8(v).expect("entity values are UTF-8"))
}

/// Python's numeric character reference rules (`html._replace_charref`).
fn numeric_charref(num: u64, out: &mut String) {
    if let Ok(i) = tables::PY_INVALID_CHARREFS.binary_search_by(|&(k, _)| (k as u64).cmp(&num)) {
        out.push(tables::PY_INVALID_CHARREFS[i].1);
    } else if (0xD800..=0xDFFF).contains(&num) || num > 0x10FFFF {
        out.push('\u{FFFD}');
    } else if tables::PY_INVALID_CODEPOINTS.binary_search(&(num as u32)).is_ok() {
        // dropped
    } else {
        out.push(char::from_u32(num as u32).expect("valid scalar"));
    }
}

fn parse_num(digits: &str, radix: u32) -> u64 {
    // saturate: anything above 0x10FFFF behaves the same
    let mut n: u64 = 0;
    for d in digits.chars() {
        n = n.saturating_mul(radix as u64).saturating_add(d.to_digit(radix).unwrap() as u64);
        if n > 0x7FFF_FFFF {
            n = 0x7FFF_FFFF;
        }
    }
    n
}

/// Length in bytes of the leading run of ASCII chars matching `f`.
fn ascii_run(s: &str, f: impl Fn(u8) -> bool) -> usize {
    s.bytes().take_while(|&b| f(b)).count()
}

/// Python's `html.unescape` (3.11): numeric references (with the HTML5
/// replacement table for invalid ones), and all HTML5 named references, with the
/// longest-prefix rule for names without `;`.
pub fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        // &(#[0-9]+;? | #[xX][0-9a-fA-F]+;? | [^\t\n\f <&#;]{1,32};?)
        if let Some(num) = after.strip_prefix('#') {
            let nd = ascii_run(num, |b| b.is_ascii_digit());
            if nd > 0 {
                let mut len = 1 + nd;
                if num[nd..].starts_with(';') {
                    len += 1;
                }
                numeric_charref(parse_num(&num[..nd], 10), &mut out);
                rest = &after[len..];
                continue;
            }
            if num.starts_with(['x', 'X']) {
                let nh = ascii_run(&num[1..], |b| b.is_ascii_hexdigit());
                if nh > 0 {
                    let mut len = 2 + nh;
                    if num[1 + nh..].starts_with(';') {
                        len += 1;
                    }
                    numeric_charref(parse_num(&num[1..1 + nh], 16), &mut out);
                    rest = &after[len..];
                    continue;
                }
            }
            out.push('&');
            rest = after;
            continue;
        }
        // named: up to 32 chars not in "\t\n\f <&#;", then optional ';'
        let mut end = 0;
        for (n, (i, c)) in after.char_indices().enumerate() {
            if n == 32 || matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';') {
                break;
            }
            end = i + c.len_utf8();
        }
        if end == 0 {
            out.push('&');
            rest = after;
            continue;
        }
        let mut mlen = end;
        if after[end..].starts_with(';') {
            mlen += 1;
        }
        let name = &after[..mlen];
        rest = &after[mlen..];
        let mut key = String::with_capacity(mlen + 1);
        key.push('&');
        key.push_str(name);
        if let Some(v) = entity(&key) {
            out.push_str(v);
            continue;
        }
        // longest prefix (at least 2 chars) that is an entity
        let bounds: Vec<usize> = name.char_indices().map(|(i, _)| i).collect();
        let mut done = false;
        for x in (2..bounds.len()).rev() {
            let b = bounds[x];
            if let Some(v) = entity(&key[..1 + b]) {
                out.push_str(v);
                out.push_str(&name[b..]);
                done = true;
                break;
            }
        }
        if !done {
            out.push_str(&key);
        }
    }
    out.push_str(rest);
    out
}

// ------------------------------------------------------------- ftfy.fix_text

fn ftfy_upper_entities() -> &'static HashMap<&'static str, &'static str> {
    static M: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    M.get_or_init(|| tables::FTFY_UPPER_ENTITIES.iter().copied().collect())
}

/// ftfy's `unescape_html`: `&#?[0-9A-Za-z]{1,24};` replaced when it names an
/// HTML5 entity ending in `;` (or one of ftfy's upper-cased ones, `&EACUTE;`), or
/// is a numeric reference that `html.unescape` decodes completely.
fn ftfy_unescape_html(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        let hash = usize::from(after.starts_with('#'));
        let n = ascii_run(&after[hash..], |b| b.is_ascii_alphanumeric());
        if (1..=24).contains(&n) && after[hash + n..].starts_with(';') {
            let m = &rest[p..p + 1 + hash + n + 1];
            if let Some(v) = entity(m).filter(|_| hash == 0) {
                out.push_str(v);
            } else if let Some(v) = ftfy_upper_entities().get(m) {
                out.push_str(v);
            } else if hash == 1 {
                let u = html_unescape(m);
                out.push_str(if u.contains(';') { m } else { &u });
            } else {
                out.push_str(m);
            }
            rest = &rest[p + m.len()..];
        } else {
            out.push('&');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn map_chars(s: &str, f: impl Fn(char, &mut String) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !f(c, &mut out) {
            out.push(c);
        }
    }
    out
}

fn is_py_decimal(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && in_ranges(&tables::PY_DECIMAL, c))
}

/// ftfy `remove_terminal_escapes`: `\x1b\[(\d|;)*[a-zA-Z]` removed.
fn remove_terminal_escapes(s: &str) -> String {
    if !s.contains('\x1b') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('\x1b') {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        if let Some(params) = after.strip_prefix('[') {
            let plen: usize = params.chars().take_while(|&c| c == ';' || is_py_decimal(c)).map(char::len_utf8).sum();
            if params[plen..].starts_with(|c: char| c.is_ascii_alphabetic()) {
                rest = &params[plen + 1..];
                continue;
            }
        }
        out.push('\x1b');
        rest = after;
    }
    out.push_str(rest);
    out
}

/// One pass of ftfy's fixers (without `fix_encoding`) over one segment.
fn fix_step(text: &str, unescape: bool) -> String {
    let mut t = if unescape { ftfy_unescape_html(text) } else { text.to_string() };
    // fix_c1_controls
    if t.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)) {
        t = map_chars(&t, |c, o| {
            if ('\u{80}'..='\u{9f}').contains(&c) {
                o.push(tables::FTFY_C1[c as usize - 0x80]);
                true
            } else {
                false
            }
        });
    }
    if !t.is_ascii() {
        // fix_latin_ligatures
        t = map_chars(&t, |c, o| {
            if c < '\u{132}' {
                return false;
            }
            match tables::FTFY_LIGATURES.binary_search_by(|&(k, _)| k.cmp(&(c as u32))) {
                Ok(i) => {
                    o.push_str(tables::FTFY_LIGATURES[i].1);
                    true
                }
                Err(_) => false,
            }
        });
        // fix_character_width
        t = map_chars(&t, |c, o| {
            if c < '\u{3000}' {
                return false;
            }
            match tables::FTFY_WIDTH.binary_search_by(|&(k, _)| k.cmp(&(c as u32))) {
                Ok(i) => {
                    o.push_str(tables::FTFY_WIDTH[i].1);
                    true
                }
                Err(_) => false,
            }
        });
        // uncurl_quotes: [\u02bc\u2018-\u201b] -> ', [\u201c-\u201f] -> "
        t = map_chars(&t, |c, o| match c {
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => {
                o.push('\'');
                true
            }
            '\u{201c}'..='\u{201f}' => {
                o.push('"');
                true
            }
            _ => false,
        });
    }
    // fix_line_breaks
    if t.contains(['\r', '\u{2028}', '\u{2029}', '\u{85}']) {
        t = t.replace("\r\n", "\n").replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
    }
    // fix_surrogates: nothing to do in UTF-8
    t = remove_terminal_escapes(&t);
    // remove_control_chars
    if t.chars().any(|c| tables::FTFY_CONTROL.binary_search(&(c as u32)).is_ok()) {
        t.retain(|c| tables::FTFY_CONTROL.binary_search(&(c as u32)).is_err());
    }
    // NFC
    if is_nfc_quick(t.chars()) != IsNormalized::Yes {
        t = nfc_as_python(&t);
    }
    t
}

/// `unicodedata.normalize("NFC", s)` as Python 3.11 (Unicode 14.0) computes it.
///
/// The `unicode-normalization` crate carries newer Unicode data. Canonical
/// decompositions, combining classes and compositions of assigned characters
/// never change between versions, so the only differences are code points that
/// Python's database does not assign: for Python those are starters that neither
/// decompose nor compose (barriers), while the crate may give them a combining
/// class (e.g. U+1ADC, U+05C8) or compositions. Splitting at them and normalising
/// the pieces reproduces Python exactly.
pub fn nfc_as_python(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if !c.is_ascii() && in_ranges(&tables::PY_UNASSIGNED, c) {
            out.extend(s[start..i].nfc());
            out.push(c);
            start = i + c.len_utf8();
        }
    }
    out.extend(s[start..].nfc());
    out
}

const FTFY_MAX_DECODE_LENGTH: usize = 1_000_000;

/// `ftfy.fix_text(text)` with its default configuration, minus `fix_encoding`
/// (mojibake repair) — see the module documentation.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    let mut pos = 0;
    while pos < text.len() {
        let rest = &text[pos..];
        let mut end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        if let Some((i, _)) = rest[..end].char_indices().nth(FTFY_MAX_DECODE_LENGTH) {
            end = i;
        }
        let seg = &rest[..end];
        if unescape && seg.contains('<') {
            unescape = false;
        }
        let mut t = seg.to_string();
        loop {
            let next = fix_step(&t, unescape);
            if next == t {
                break;
            }
            t = next;
        }
        out.push_str(&t);
        pos += end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_python_semantics() {
        assert_eq!(py_lower("HELLO World"), "hello world");
        assert_eq!(py_lower("ΟΔΥΣΣΕΥΣ"), "οδυσσευς");
        assert_eq!(py_lower("Σ"), "σ");
        assert_eq!(py_lower("ΑΣ Α"), "ας α");
        assert_eq!(py_lower("ΑΣ'Α"), "ασ'α"); // ' is case-ignorable
        assert_eq!(py_lower("ΑΣ1"), "ας1");
        assert_eq!(py_lower("İstanbul"), "i\u{307}stanbul");
        assert_eq!(py_lower("Straße ẞ"), "straße ß");
        assert_eq!(py_lower("ǅ Ⅻ Ⓐ"), "ǆ ⅻ ⓐ");
    }

    #[test]
    fn python_whitespace() {
        for c in ['\x1c', '\x1d', '\x1e', '\x1f', '\u{85}', '\u{a0}', '\u{3000}', '\u{2028}', '\u{202f}'] {
            assert!(is_py_space(c), "{c:?}");
        }
        for c in ['\u{200b}', '\u{180e}', '\u{feff}', '\u{2060}'] {
            assert!(!is_py_space(c), "{c:?}");
        }
        assert_eq!(whitespace_clean(" a \t\u{3000}b\x1c c "), "a b c");
    }

    #[test]
    fn html_unescape_python_semantics() {
        let cases = [
            ("&amp;", "&"),
            ("&amp", "&"),
            ("&notit;", "¬it;"),
            ("&notin;", "∉"),
            ("&copy2024", "©2024"),
            ("&#0;", "\u{fffd}"),
            ("&#128;", "€"),
            ("&#x80;", "€"),
            ("&#1;", ""),
            ("&#xFFFF;", ""),
            ("&#xD800;", "\u{fffd}"),
            ("&#x110000;", "\u{fffd}"),
            ("&#99999999999999999999;", "\u{fffd}"),
            ("&#65", "A"),
            ("&#65a;", "Aa;"),
            ("&#;", "&#;"),
            ("&#x;", "&#x;"),
            ("&;", "&;"),
            ("&EACUTE;", "&EACUTE;"),
            ("&Eacute", "É"),
            ("&fjlig;", "fj"),
            ("&amp;amp;", "&amp;"),
            ("a&&lt;b", "a&<b"),
        ];
        for (i, o) in cases {
            assert_eq!(html_unescape(i), o, "{i:?}");
        }
    }

    #[test]
    fn ftfy_steps() {
        assert_eq!(fix_text("&EACUTE; &SZLIG; &nTILDE;"), "É SS &nTILDE;");
        assert_eq!(fix_text("&amp;amp;amp;"), "&");
        assert_eq!(fix_text("<b>&amp;</b>"), "<b>&amp;</b>");
        assert_eq!(fix_text("&amp;\n<x>\n&amp;"), "&\n<x>\n&amp;");
        assert_eq!(fix_text("&not it"), "&not it");
        assert_eq!(fix_text("ﬂuﬃeﬆ"), "fluffiest");
        assert_eq!(fix_text("ＬＯＵＤ　ＮＯＩＳＥＳ"), "LOUD NOISES");
        assert_eq!(fix_text("\u{201c}here\u{2019}s\u{201d}"), "\"here's\"");
        assert_eq!(fix_text("a\r\nb\rc\u{2028}d"), "a\nb\nc\nd");
        assert_eq!(fix_text("a\u{85}b"), "a…b");
        assert_eq!(fix_text("\x1b[36;44mblue\x1b[0m"), "blue");
        assert_eq!(fix_text("a\x00b\x7fc\u{feff}d"), "abcd");
        assert_eq!(fix_text("cafe\u{301}"), "café");
        assert_eq!(fix_text("\u{91}q\u{92}"), "'q'");
    }

    #[test]
    fn full_clean() {
        assert_eq!(clean("  Tom &amp;amp; JERRY\t\n "), "tom & jerry");
        assert_eq!(clean("<|ENDOFTEXT|>"), "<|endoftext|>");
        assert_eq!(clean(""), "");
    }
}
