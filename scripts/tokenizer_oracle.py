#!/usr/bin/env python3
"""Reference data for clip-wgpu's tokenizer (src/text/).

    python3 scripts/tokenizer_oracle.py            # corpus + mojibake fixtures
    python3 scripts/tokenizer_oracle.py tables     # regenerate src/text/tables.rs
    python3 scripts/tokenizer_oracle.py all        # both

The reference is OpenAI's tokenizer (`clip/simple_tokenizer.py`, reproduced
verbatim below as `OpenAITokenizer`: ftfy.fix_text, html.unescape twice, strip,
whitespace collapse, str.lower(), regex pre-tokenisation, BPE) with open_clip's
truncation (`tokens[:77]`, last one replaced by EOT).  open_clip's own
SimpleTokenizer is identical except that its special tokens are spelled
`<start_of_text>` / `<end_of_text>`; its ids are recorded as `open_clip_ids`
where they differ.

Writes
  tests/fixtures/tokenizer_corpus.jsonl   {"text", "ids"[, "open_clip_ids"]}: must match 100 %
  tests/fixtures/tokenizer_mojibake.jsonl {"text", "ids", "ids_no_mojibake_repair"}: strings on
      which ftfy's fix_encoding (mojibake repair, out of scope) changes the result; our
      tokenizer must give `ids_no_mojibake_repair` (= the reference with
      ftfy.fix_text(..., fix_encoding=False)).
"""
import gzip
import html
import html.entities
import json
import os
import random
import sys
import unicodedata
from functools import lru_cache

import ftfy
import ftfy.bad_codecs  # noqa: F401  (registers sloppy-windows-1252)
import ftfy.chardata as chardata
import regex as re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# OpenAI's BPE merges: $CLIP_BPE, else the copy open_clip ships
BPE_PATH = os.environ.get("CLIP_BPE", "")
if not os.path.exists(BPE_PATH):
    import open_clip.tokenizer
    BPE_PATH = open_clip.tokenizer.default_bpe()
CONTEXT_LENGTH = 77


# --------------------------------------------------------------------------
# OpenAI's clip/simple_tokenizer.py (MIT, Copyright (c) 2021 OpenAI), verbatim
# apart from the `fix_encoding` switch used for the mojibake fixture.
@lru_cache()
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    cs = [chr(n) for n in cs]
    return dict(zip(bs, cs))


def get_pairs(word):
    pairs = set()
    prev_char = word[0]
    for char in word[1:]:
        pairs.add((prev_char, char))
        prev_char = char
    return pairs


def basic_clean(text, fix_encoding=True):
    text = ftfy.fix_text(text, fix_encoding=fix_encoding)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text):
    text = re.sub(r'\s+', ' ', text)
    text = text.strip()
    return text


class OpenAITokenizer(object):
    def __init__(self, bpe_path: str = BPE_PATH):
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        merges = gzip.open(bpe_path).read().decode("utf-8").split('\n')
        merges = merges[1:49152 - 256 - 2 + 1]
        merges = [tuple(merge.split()) for merge in merges]
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v + '</w>' for v in vocab]
        for merge in merges:
            vocab.append(''.join(merge))
        vocab.extend(['<|startoftext|>', '<|endoftext|>'])
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {'<|startoftext|>': '<|startoftext|>', '<|endoftext|>': '<|endoftext|>'}
        self.pat = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", re.IGNORECASE)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + '</w>',)
        pairs = get_pairs(word)
        if not pairs:
            return token + '</w>'
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float('inf')))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except Exception:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            new_word = tuple(new_word)
            word = new_word
            if len(word) == 1:
                break
            else:
                pairs = get_pairs(word)
        word = ' '.join(word)
        self.cache[token] = word
        return word

    def encode(self, text, fix_encoding=True):
        bpe_tokens = []
        text = whitespace_clean(basic_clean(text, fix_encoding)).lower()
        for token in re.findall(self.pat, text):
            token = ''.join(self.byte_encoder[b] for b in token.encode('utf-8'))
            bpe_tokens.extend(self.encoder[bpe_token] for bpe_token in self.bpe(token).split(' '))
        return bpe_tokens

    # clip.tokenize(..., truncate=True) == open_clip.tokenize
    def tokenize(self, text, fix_encoding=True):
        sot, eot = self.encoder['<|startoftext|>'], self.encoder['<|endoftext|>']
        tokens = [sot] + self.encode(text, fix_encoding) + [eot]
        if len(tokens) > CONTEXT_LENGTH:
            tokens = tokens[:CONTEXT_LENGTH]
            tokens[-1] = eot
        return tokens


def open_clip_ids(texts):
    import open_clip
    out = []
    t = open_clip.tokenize(texts)
    for row in t.tolist():
        n = len(row)
        while n > 0 and row[n - 1] == 0:
            n -= 1
        out.append(row[:n])
    return out


# --------------------------------------------------------------------------
# corpus
def corpus():
    c = []
    add = c.append
    # plain captions
    for s in [
        "a photo of a cat", "a photo of a dog", "A diagram", "a photo of an astronaut riding a horse",
        "a photo of a {}.", "itap of a {}.", "a bad photo of the {}.", "a origami {}.",
        "a close-up photo of a red apple on a wooden table", "Two people walking on the beach at sunset.",
        "The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
        "a black and white photograph of Franz Kafka", "satellite imagery of a city", "an oil painting of a lighthouse",
        "A man's hat isn't on the table; they're we've I'm you'll he'd", "DON'T STOP BELIEVIN'", "rock'n'roll",
        "it's", "It'S", "'s 't 're 've 'm 'll 'd", "''s", "'''", "o'clock", "y'all'd've", "l'homme",
        "hello world", "Hello World", "hello-world", "hello_world", "hello.world", "hello/world", "hello\\world",
        "e-mail: someone@example.com", "https://www.example.com/path?query=1&b=2#frag", "#hashtag @mention",
        "C++ and C# and F#", "x = y + z * 2 / (3 - 1)", "100% sure!!!", "wait... what?!", "¿Qué? ¡Sí!",
        "«quoted» ‹single›", "(parenthesised) [bracketed] {braced} <angled>", "a|b|c", "~tilde~ `backtick` ^caret^",
        "---", "...", "!!!???", "$$$", "© ® ™ § ¶ † ‡ • …", "½ ¼ ¾ ² ³ ¹", "±×÷", "°C °F", "µm mm",
    ]:
        add(s)
    # numbers
    for s in ["0", "7", "42", "1234567890", "3.14159", "1,000,000", "-12", "+1 (555) 123-4567", "2024-01-31",
              "12:30pm", "1st 2nd 3rd 4th", "v1.2.3", "0x1F600", "1e-5", "٣٤٥ ۴۵۶", "१२३", "一二三", "Ⅻ ⅻ ⅷ", "①②③",
              "𝟙𝟚𝟛", "¹²³", "১২৩", "๑๒๓"]:
        add(s)
    # scripts
    for s in [
        "一只猫坐在桌子上", "東京タワーの写真", "カタカナ ひらがな 漢字", "한국어 문장입니다", "これは日本語です。",
        "مرحبا بالعالم", "صورة لقطة", "שלום עולם", "नमस्ते दुनिया", "हिन्दी में एक वाक्य", "বাংলা", "தமிழ்", "ไทย ภาษา",
        "ქართული", "Հայերեն", "አማርኛ", "ᚠᚢᚦᚨᚱᚲ", "𐌰𐌱𐌲", "Ελληνικά", "ΟΔΥΣΣΕΥΣ", "ΣΟΦΟΣ ΛΟΓΟΣ", "Σ", "ΑΣ", "ΑΣ.", "ΑΣ Α",
        "ΑΣ'Α", "ΑΣ'", "Σ'Α", "AΣb", "ΑΣ\u0301", "ΑΣ\u0301Α", "ὈΔΥΣΣΕΎΣ", "Ἀθῆναι", "Русский текст", "ПРИВЕТ МИР",
        "Українська їжак", "Türkçe İstanbul IĞDIR ıi", "İ", "İİ", "I\u0307", "DİYARBAKIR", "Straße STRASSE ẞ",
        "Ærøskøbing Œuvre", "Ĳsselmeer ĳs", "Ǆemal ǅ ǆ Ǉ ǈ ǉ Ǌ ǋ ǌ Ǳ ǲ ǳ", "Ⓐⓑ Ⅻ", "ＡＢＣ", "Ꙁ ꙁ", "Ꭰ ꭰ", "Ⴀ ⴀ",
        "ǅungla", "ΐ ΰ", "ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ", "ŉ", "ΣΑΣ ΣΑΣ", "Σ1", "AΣ1", "ΑΣΣ", "ᾼ", "ῼΣ", "ǰ", "Åström", "K Å",
        "Tiếng Việt có dấu", "Dấu hỏi", "Ệ", "ʻOkina Hawaiʻi", "Hausa ƙ ɗ ɓ", "Yorùbá", "Ñandú", "Łódź Żółć",
        "Čeština řeč", "Ελλάδα!", "ⅰⅱⅲ Ⅰ", "ꟼ Ꟶ ꟶ", "ſ ſt", "ſ", "'ſ", "it'ſ", "<|ſtartoftext|>", "<|endoftext|>ſ",
    ]:
        add(s)
    # combining marks / NFD input
    for s in ["e\u0301", "cafe\u0301", "Cafe\u0301 au lait", "A\u030a", "o\u0308", "\u0301", "a\u0301\u0301",
              "n\u0303", "\u1100\u1161\u11a8", "e\u0301\u0327", "e\u0327\u0301", "q\u0307\u0323", "ᄀ ᅡ", "\u0345",
              "α\u0345", "x\u0345", "\u0345\u0345", "Ω\u0345", "ά", "ΰ", "i\u0307", "\u0915\u093c", "\u0958",
              # code points unassigned in Python 3.11's Unicode 14 but assigned later (NFC / lower / \p{L})
              "\u05a1\u05c8", "a\u033e\u05c9", "a\u1adc\u033a", "e\u1ad6\u0301", "\U00016d63\U00016d67",
              "\u1c89\u1c8a", "\ua7cb\ua7cc\ua7dc", "\U00010d50\U00010d70", "\U0001e5d0"]:
        add(s)
    # emoji
    for s in ["😀", "😀😃😄", "I ❤️ NY", "👍🏽", "👨‍👩‍👧‍👦 family", "🏳️‍🌈", "🇺🇸🇫🇷🇯🇵", "🇺", "🏴󠁧󠁢󠁷󠁬󠁳󠁿 Wales",
              "☺", "☺️", "#️⃣ 1️⃣", "🧑‍💻", "a😀b", "emoji😀text", "🐈‍⬛", "❤\ufe0f", "\u200d"]:
        add(s)
    # HTML entities
    for s in [
        "&amp;", "&amp", "&lt;b&gt;bold&lt;/b&gt;", "Tom &amp; Jerry", "Tom &amp;amp; Jerry", "&amp;amp;amp;",
        "&amp;amp;amp;amp;lt;", "&quot;quoted&quot;", "&#39;single&#39;", "&#x27;hex&#X27;", "&#8217;", "&#x2019;",
        "&hellip; &mdash; &ndash; &nbsp;x", "caf&eacute;", "CAF&EACUTE;", "P&EACUTE;REZ", "BUNDESSTRA&SZLIG;E",
        "&ntilde; &Ntilde; &NTILDE; &nTILDE;", "&notit;", "&notin;", "&not it", "this&not that", "&copy2024",
        "&copy;2024", "&COPY;", "&eacutex", "&Eacute", "&AElig", "&#0;", "&#13;", "&#128;", "&#129;", "&#150;",
        "&#x80;", "&#x9F;", "&#1;", "&#xb;", "&#x7f;", "&#xFFFF;", "&#xFDD0;", "&#xD800;", "&#x110000;",
        "&#99999999999999999999;", "&#65", "&#65a;", "&#x41g", "&#xZZ;", "&#;", "&#x;", "&;", "& amp;", "&&amp;",
        "&amp;#39;", "&amp;#x27;", "&#38;amp;", "&#38;#38;amp;", "&Jscr;ohn &HilbertSpace;ancock", "&checkmark;",
        "&fjlig;", "&NotEqualTilde;", "&nGt;", "&bne;", "&ThickSpace;x", "&NewLine;a", "&Tab;b", "&zwj;", "&zwnj;",
        "&lrm;&rlm;", "&shy;", "&aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;", "&amp&amp", "&ampx", "&lt3", "&gt;_&lt;",
        "<b>&amp;</b>", "<3 &amp; hugs", "a < b &amp; c", "1 &lt; 2", "&lt;", "&LT;", "&LT", "&Lt;", "&eur;", "&euro;",
        "&pound;5", "&yen &cent", "&micro;", "&frac12;", "&sup2;", "&Sigma;&Alpha;&Sigma;", "&ALPHA;",
        "line1\n&amp;\n<tag>\n&amp;", "&amp;\n<x>", "<x>\n&amp;", "&#x1F600;", "&#128512;", "&#x1f1fa;&#x1f1f8;",
        "&#x301;", "e&#x301;", "<e&#x301;", "&#x2028;x", "&#x85;", "&#133;", "&#x1c;y", "&#12288;z", "&#x3000;",
        "&#xFF21;", "&#xFB01;", "&#x201C;q&#x201D;", "<&#x201C;q&#x201D;", "&#x130;", "&#931;&#913;&#931;", "&#x0;",
        "&nbsp;&nbsp;", "a&nbsp;b", "&ensp;&emsp;&thinsp;", "&NoBreak;",
    ]:
        add(s)
    # whitespace
    for s in ["", " ", "   ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\x1c", "\x1c\x1d\x1e\x1f", "\x85", "\u2028\u2029",
              "  leading", "trailing  ", "  both  ", "a  b", "a\tb", "a\nb", "a\r\nb", "a\rb", "a\x0bb", "a\x0cb",
              "a\u00a0b", "a\u3000b", "a\x1cb", "a\x1fb", "a\x85b", "a\u2028b", "a\u2029b", "a\u2000b\u200ac",
              "a\u202fb\u205fc", "a\u1680b", "a\u200bb", "a\u180eb", "a\ufeffb", "\ufeffBOM", "a \t\n\r\x0b\x0c b",
              "\u00a0\u00a0x\u00a0\u00a0", "a\u200cb\u200dc", "\u2060word\u2060"]:
        add(s)
    # upper case / special token text
    for s in ["UPPER CASE", "MiXeD CaSe", "<|endoftext|>", "<|ENDOFTEXT|>", "<|EndOfText|>", "<|startoftext|>",
              "<|STARTOFTEXT|>", "a photo<|endoftext|>of", "a photo <|endoftext|> of", "!<|endoftext|>",
              "<<|endoftext|>", "<|endoftext|><|endoftext|>", "x<|startoftext|>y", "<|endoftext|", "<|end of text|>",
              "<start_of_text>", "<end_of_text>", "<END_OF_TEXT>", "a <end_of_text> b", "&lt;|endoftext|&gt;",
              "&lt;|ENDOFTEXT|&gt;", "＜|endoftext|＞", "<|endoftext|>'s", "<|endoftext|>s"]:
        add(s)
    # quotes, ligatures, width, controls
    for s in ["\u201chere\u2019s a test\u201d", "\u2018single\u2019", "\u201ad\u201b", "\u201e\u201f",
              "\u02bcokina", "it\u2019s", "IT\u2019S", "don\u2019t", "\u2033 \u2032", "\u00b4acute\u0060",
              "ﬂuﬃeﬆ", "ﬁsh", "Ĳ", "ＬＯＵＤ　ＮＯＩＳＥＳ", "ｆｕｌｌ ｗｉｄｔｈ １２３", "Ｕﾀｰﾝ", "ﾊﾝｶｸ", "ｶﾞｷﾞ",
              "\uffe0\uffe1\uffe2\uffe3\uffe4\uffe5\uffe6", "\uffe8\uffe9\uffee", "\uff02\uff07", "ｈｔｔｐ：／／",
              "\x00nul", "a\x01b", "a\x07b", "a\x08b", "a\x0eb", "a\x1bb", "a\x7fb", "\x1b[36;44mblue\x1b[0m",
              "\x1b[1mbold", "\x1b[٣m", "\x1b[m", "\x1b[", "\x1bx", "a\u206ab", "a\ufff9b\ufffab\ufffbb\ufffcb",
              "a\ufffdb", "a\u200eb\u200fc", "a\u202ab\u202ec", "\U000e0041tag", "\x80", "\x81", "\x8d", "\x90",
              "\x91quote\x92", "\x93dq\x94", "\x96dash\x97", "\x99", "\x9f", "\x9d", "caf\x85", "a\x85\nb",
              "\x85\x85", "\U0001d173x", "\u0080\u0085\u009f"]:
        add(s)
    # lengths
    add("a " * 74)
    add("a " * 75)
    add("a " * 76)
    add("a " * 77)
    add("a " * 200)
    add("word" * 100)
    add("😀" * 80)
    add("supercalifragilisticexpialidocious " * 10)
    add(("A very long caption describing a complex scene with many objects, people, animals and "
         "buildings, written to exceed the seventy-seven token context window of CLIP so that the "
         "truncation behaviour is exercised, keeping the end-of-text token last. ") * 2)
    add("x" * 1000)
    add("1" * 100)
    add("<|endoftext|>" * 80)
    add("&amp;" * 100)
    add("Σ " * 100)
    # random mixes
    rng = random.Random(1234)
    pool = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"-_/()[]&#<>|")
            + ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&#x2019;", "&nbsp;", "&eacute;", "&EACUTE;", "&amp;amp;",
               "&not", "&copy", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000", "\u2028", "\x1c", "\x85", "\x0b",
               "Σ", "ς", "σ", "İ", "ı", "ß", "ẞ", "\u0301", "\u0308", "\u0345", "\u0307", "é", "ñ", "ø", "æ", "œ",
               "ﬁ", "ﬂ", "Ａ", "ｂ", "１", "ｶ", "\uff9e", "\u201c", "\u201d", "\u2018", "\u2019", "\u02bc", "猫", "日本",
               "한", "م", "ع", "न", "\u093f", "ก", "\u0e31", "😀", "👍🏽", "\u200d", "\ufe0f", "🇫🇷", "€", "™", "½", "٣",
               "Ⅻ", "<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>", "'s", "'LL", "ſ", "K", "Å", "ǅ", "ΐ",
               "\x1b[31m", "\x00", "\x7f", "\ufeff", "\u200b", "\x91", "\x9d", "α", "Ω", "Я", "ё", "\u2160"])
    for n in range(130):
        k = rng.randint(1, 25)
        add("".join(rng.choice(pool) for _ in range(k)))
    return c


def rust_str(s):
    out = []
    for ch in s:
        cp = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == '\\':
            out.append('\\\\')
        elif 0x20 <= cp < 0x7f:
            out.append(ch)
        else:
            out.append("\\u{%x}" % cp)
    return '"' + "".join(out) + '"'


def ranges_of(pred, limit=0x110000):
    out = []
    start = None
    for cp in range(limit + 1):
        ok = cp < limit and not (0xD800 <= cp < 0xE000) and pred(cp)
        if 0xD800 <= cp < 0xE000 and start is not None:
            continue  # surrogates never occur in Rust strings: let ranges span them
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            out.append((start, cp - 1))
            start = None
    return out


def gen_tables(path):
    L = []
    w = L.append
    w("// @generated by scripts/tokenizer_oracle.py tables -- do not edit.")
    w(f"// Python {sys.version.split()[0]} (unicodedata {unicodedata.unidata_version}), "
      f"regex {re.__version__}, ftfy {ftfy.__version__}.")
    w("#![allow(clippy::unreadable_literal)]")
    w("")
    # str.lower(): single-char mappings (U+0130 and U+03A3 are handled in code)
    low = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000 or cp in (0x130, 0x3A3):
            continue
        lc = chr(cp).lower()
        if lc != chr(cp):
            assert len(lc) == 1, (hex(cp), lc)
            low.append((cp, ord(lc)))
    assert chr(0x130).lower() == "i\u0307"
    w(f"/// Python `str.lower()` for every code point it changes (except U+0130 and U+03A3).")
    w(f"pub static PY_LOWER: [(u32, u32); {len(low)}] = [")
    for i in range(0, len(low), 6):
        w("    " + " ".join(f"(0x{a:X}, 0x{b:X})," for a, b in low[i:i + 6]))
    w("];")

    # Final_Sigma properties, probed through str.lower()
    def t2(cp):
        return (chr(cp) + "\u03a3").lower()[-1] == "\u03c2"

    def t3(cp):
        return ("A" + chr(cp) + "\u03a3").lower()[-1] == "\u03c2"

    ign = ranges_of(lambda cp: t3(cp) and not t2(cp))
    cased = ranges_of(t2)
    for name, rr, doc in [("CASE_IGNORABLE", ign, "Case_Ignorable as Python's str.lower() sees it"),
                          ("CASED", cased, "Cased and not Case_Ignorable, as Python's str.lower() sees it")]:
        w(f"/// {doc}.")
        w(f"pub static {name}: [(u32, u32); {len(rr)}] = [")
        for i in range(0, len(rr), 6):
            w("    " + " ".join(f"(0x{a:X}, 0x{b:X})," for a, b in rr[i:i + 6]))
        w("];")

    # Pre-tokeniser character classes: `[\p{L}]`, `[\p{N}]`, `[^\s\p{L}\p{N}]` under re.IGNORECASE
    PL = re.compile(r'[\p{L}]', re.IGNORECASE)
    PN = re.compile(r'[\p{N}]', re.IGNORECASE)
    PP = re.compile(r'[^\s\p{L}\p{N}]', re.IGNORECASE)
    starts = []
    prev = None
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        ch = chr(cp)
        k = (1 if PL.fullmatch(ch) else 0) | (2 if PN.fullmatch(ch) else 0) | (4 if PP.fullmatch(ch) else 0)
        assert k in (0, 1, 2, 4), hex(cp)
        if k != prev:
            starts.append((cp, k))
            prev = k
    w("/// Pre-tokeniser class of each code point from the start of the range up to the next entry:")
    w("/// 1 `[\\p{L}]`, 2 `[\\p{N}]`, 4 `[^\\s\\p{L}\\p{N}]`, 0 none (whitespace, U+0345), as the `regex`")
    w("/// module decides with re.IGNORECASE.")
    w(f"pub static PRETOKEN_CLASS: [(u32, u8); {len(starts)}] = [")
    for i in range(0, len(starts), 8):
        w("    " + " ".join(f"(0x{a:X}, {k})," for a, k in starts[i:i + 8]))
    w("];")

    # Python `re` \d (for ftfy's ANSI escape regex)
    dig = ranges_of(lambda cp: bool(__import__("re").fullmatch(r"\d", chr(cp))))
    w("/// Python `re` `\\d` (Unicode decimal digits).")
    w(f"pub static PY_DECIMAL: [(u32, u32); {len(dig)}] = [")
    for i in range(0, len(dig), 6):
        w("    " + " ".join(f"(0x{a:X}, 0x{b:X})," for a, b in dig[i:i + 6]))
    w("];")

    # code points unassigned in Python's unicodedata: inert for its NFC
    cn = ranges_of(lambda cp: unicodedata.category(chr(cp)) == "Cn")
    w(f"/// Code points unassigned in Python's unicodedata {unicodedata.unidata_version} (category Cn).")
    w(f"pub static PY_UNASSIGNED: [(u32, u32); {len(cn)}] = [")
    for i in range(0, len(cn), 6):
        w("    " + " ".join(f"(0x{a:X}, 0x{b:X})," for a, b in cn[i:i + 6]))
    w("];")

    # str.isspace
    sp = [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000 and chr(cp).isspace()]
    w("/// Python `str.isspace()` (what `str.split()` and `str.strip()` use).")
    w(f"pub static PY_WHITESPACE: [u32; {len(sp)}] = [" + ", ".join(f"0x{c:X}" for c in sp) + "];")

    # ftfy fix_character_width
    wm = sorted(chardata.WIDTH_MAP.items())
    w("/// ftfy `fix_character_width` (chardata.WIDTH_MAP).")
    w(f"pub static FTFY_WIDTH: [(u32, &str); {len(wm)}] = [")
    for i in range(0, len(wm), 6):
        w("    " + " ".join(f"(0x{a:X}, {rust_str(b)})," for a, b in wm[i:i + 6]))
    w("];")
    lig = sorted(chardata.LIGATURES.items())
    w("/// ftfy `fix_latin_ligatures` (chardata.LIGATURES).")
    w(f"pub static FTFY_LIGATURES: [(u32, &str); {len(lig)}] = [")
    for a, b in lig:
        w(f"    (0x{a:X}, {rust_str(b)}),")
    w("];")
    cc = sorted(chardata.CONTROL_CHARS)
    w("/// ftfy `remove_control_chars` (chardata.CONTROL_CHARS).")
    w(f"pub static FTFY_CONTROL: [u32; {len(cc)}] = [" + ", ".join(f"0x{c:X}" for c in cc) + "];")
    c1 = [(b, bytes([b]).decode("sloppy-windows-1252")) for b in range(0x80, 0xA0)]
    assert all(len(s) == 1 for _, s in c1)
    w("/// ftfy `fix_c1_controls`: U+0080..U+009F decoded as sloppy-windows-1252.")
    w("pub static FTFY_C1: [char; 32] = [" + ", ".join(f"'\\u{{{ord(s):x}}}'" for _, s in c1) + "];")
    # ftfy HTML_ENTITIES: html5 names with ';' plus upper-cased extras
    extra = []
    for k, v in sorted(chardata.HTML_ENTITIES.items()):
        if k[1:] in html.entities.html5:
            assert html.entities.html5[k[1:]] == v and k.endswith(";")
        else:
            extra.append((k, v))
    n_semi = sum(1 for k in html.entities.html5 if k.endswith(";"))
    assert len(chardata.HTML_ENTITIES) == n_semi + len(extra)
    w("/// ftfy's upper-cased HTML entities (chardata.HTML_ENTITIES minus the html5 names).")
    w(f"pub static FTFY_UPPER_ENTITIES: [(&str, &str); {len(extra)}] = [")
    for i in range(0, len(extra), 4):
        w("    " + " ".join(f"({rust_str(k)}, {rust_str(v)})," for k, v in extra[i:i + 4]))
    w("];")
    # html.unescape numeric tables
    inv = sorted(html._invalid_charrefs.items())
    w("/// Python `html._invalid_charrefs`.")
    w(f"pub static PY_INVALID_CHARREFS: [(u32, char); {len(inv)}] = [")
    for i in range(0, len(inv), 8):
        w("    " + " ".join(f"(0x{a:X}, '\\u{{{ord(b):x}}}')," for a, b in inv[i:i + 8]))
    w("];")
    icp = sorted(html._invalid_codepoints)
    w("/// Python `html._invalid_codepoints`.")
    w(f"pub static PY_INVALID_CODEPOINTS: [u32; {len(icp)}] = [")
    for i in range(0, len(icp), 12):
        w("    " + " ".join(f"0x{c:X}," for c in icp[i:i + 12]))
    w("];")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
    print(f"wrote {path}")


def write_corpus():
    tok = OpenAITokenizer()
    texts = corpus()
    seen = set()
    uniq = []
    for t in texts:
        if t not in seen:
            seen.add(t)
            uniq.append(t)
    oc = open_clip_ids(uniq)
    main, moj = [], []
    n_oc = 0
    for t, o in zip(uniq, oc):
        ids = tok.tokenize(t)
        ids_nf = tok.tokenize(t, fix_encoding=False)
        if ids != ids_nf:
            moj.append({"text": t, "ids": ids, "ids_no_mojibake_repair": ids_nf})
            continue
        rec = {"text": t, "ids": ids}
        if o != ids:
            rec["open_clip_ids"] = o
            n_oc += 1
        main.append(rec)
    # documented mojibake examples (ftfy's fix_encoding, not reproduced)
    for t in ["sÃ³", "âœ” No problems", "voilÃ le travail", "The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.",
              "&macr;\\_(ã\x83\x84)_/&macr;", "Ã©lÃ©phant", "Ð¿Ñ€Ð¸Ð²ÐµÑ‚", "â€œquotedâ€\x9d", "cafÃ©",
              "This text was never UTF-8 at all\x85"]:
        ids = tok.tokenize(t)
        ids_nf = tok.tokenize(t, fix_encoding=False)
        if t not in seen:
            moj.append({"text": t, "ids": ids, "ids_no_mojibake_repair": ids_nf, "differs": ids != ids_nf})
    fx = os.path.join(ROOT, "tests", "fixtures")
    os.makedirs(fx, exist_ok=True)
    with open(os.path.join(fx, "tokenizer_corpus.jsonl"), "w") as f:
        for r in main:
            f.write(json.dumps(r, ensure_ascii=True) + "\n")
    with open(os.path.join(fx, "tokenizer_mojibake.jsonl"), "w") as f:
        for r in moj:
            f.write(json.dumps(r, ensure_ascii=True) + "\n")
    print(f"corpus: {len(main)} strings ({n_oc} where open_clip's <start_of_text>/<end_of_text> spelling differs), "
          f"mojibake: {len(moj)}")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "corpus"
    if what in ("tables", "all"):
        gen_tables(os.path.join(ROOT, "src", "text", "tables.rs"))
    if what in ("corpus", "all"):
        write_corpus()
