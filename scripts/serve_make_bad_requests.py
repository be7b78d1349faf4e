#!/usr/bin/env python3
"""Writes tests/fixtures/bad/requests/: bad HTTP requests for `clip-wgpu serve`, one body file
each, and manifest.json (endpoint, content type, expected statuses, words the error must
mention). The big ones (100,000 texts, a 10 MB string, a 20 MB body, a decompression bomb,
invalid UTF-8) are described by a `generate` key and made by tests/serve.rs.

    python3 scripts/serve_make_bad_requests.py
"""

import base64
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/bad/requests"
IMAGES = ROOT / "tests/fixtures/images"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for f in OUT.iterdir():
        f.unlink()
    tiny_png = base64.b64encode((IMAGES / "rgb_1x1.png").read_bytes()).decode()
    clip_png = (IMAGES / "CLIP.png").read_bytes()
    cases = []

    def add(name, path, expect, body=None, generate=None, mentions=(), method="POST", ct=None, raw=None):
        c = {"name": name, "method": method, "path": path, "expect": expect}
        if ct:
            c["content_type"] = ct
        if raw is not None:
            c["file"] = name + ".body"
            (OUT / c["file"]).write_bytes(raw)
        elif body is not None:
            c["file"] = name + ".json"
            (OUT / c["file"]).write_text(body if isinstance(body, str) else json.dumps(body))
        if generate:
            c["generate"] = generate
        if mentions:
            c["mentions"] = list(mentions)
        cases.append(c)

    add("malformed_json", "/embed", [400], body='{"texts": ["a dog"', mentions=["invalid JSON"])
    add("not_json", "/v1/embeddings", [400], body="hello, world", mentions=["invalid JSON"])
    add("empty_body", "/embed", [400], raw=b"", mentions=["empty"])
    add("json_array_body", "/score", [400], body="[1, 2, 3]", mentions=["invalid JSON"])
    add("texts_not_a_list", "/embed", [400], body={"texts": "a dog"}, mentions=["texts"])
    add("image_not_a_string", "/embed", [400], body={"images": [1]}, mentions=["images[0]"])
    add("unknown_field", "/embed", [400], body={"imgs": [tiny_png]}, mentions=["imgs"])
    add("nothing_to_embed", "/embed", [400], body={}, mentions=["nothing to embed"])
    add("score_without_texts", "/score", [400], body={"images": [tiny_png]}, mentions=["texts"])
    add("score_without_images", "/score", [400], body={"texts": ["a dog"]}, mentions=["images"])
    add("openai_missing_input", "/v1/embeddings", [400], body={"model": "m"}, mentions=["input"])
    add("openai_empty_list", "/v1/embeddings", [400], body={"model": "m", "input": []}, mentions=["input"])
    add("openai_input_number", "/v1/embeddings", [400], body={"model": "m", "input": 5}, mentions=["input"])
    add("openai_token_arrays", "/v1/embeddings", [400], body={"model": "m", "input": [[49406, 320, 49407]]},
        mentions=["token"])
    add("openai_null_item", "/v1/embeddings", [400], body={"model": "m", "input": ["a dog", None]},
        mentions=["input[1]"])
    add("openai_bad_encoding_format", "/v1/embeddings", [400],
        body={"model": "m", "input": "a", "encoding_format": "int8"}, mentions=["encoding_format"])
    add("openai_wrong_dimensions", "/v1/embeddings", [400], body={"model": "m", "input": "a", "dimensions": 3},
        mentions=["dimensions"])
    add("openai_empty_string", "/v1/embeddings", [400], body={"model": "m", "input": ["a dog", ""]},
        mentions=["input[1]"])
    add("openai_bad_base64_image", "/v1/embeddings", [400],
        body={"model": "m", "input": ["data:image/png;base64,!!!not base64!!!"]}, mentions=["input[0]", "base64"])
    add("openai_non_image_bytes", "/v1/embeddings", [400],
        body={"model": "m", "input": ["data:image/png;base64," + base64.b64encode(b"just text, no image").decode()]},
        mentions=["input[0]"])
    add("openai_data_url_not_base64", "/v1/embeddings", [400],
        body={"model": "m", "input": ["data:image/png,rawbytes"]}, mentions=["base64"])
    add("openai_truncated_png", "/v1/embeddings", [400],
        body={"model": "m", "input": ["data:image/png;base64," + base64.b64encode(clip_png[:200]).decode()]},
        mentions=["input[0]"])
    add("openai_decompression_bomb", "/v1/embeddings", [400], generate="bomb_openai", mentions=["input[0]"])
    add("openai_lone_surrogate", "/v1/embeddings", [400], body='{"model": "m", "input": "\\ud800 dog"}',
        mentions=["invalid JSON"])
    add("embed_bad_base64", "/embed", [200], body={"images": ["%%% not base64 %%%"]},
        mentions=["images[0]", "base64"])
    add("embed_non_image_bytes", "/embed", [200],
        body={"images": [base64.b64encode(b"GIF89a but not really").decode()]}, mentions=["images[0]"])
    add("embed_url_is_not_fetched", "/embed", [200], body={"images": ["https://example.com/cat.jpg"]},
        mentions=["not fetched"])
    add("embed_file_url_is_not_read", "/embed", [200], body={"images": ["file:///etc/passwd"]},
        mentions=["not fetched"])
    add("embed_path_is_not_read", "/embed", [200], body={"images": ["/etc/passwd"]}, mentions=["images[0]"])
    add("score_bad_image_in_place", "/score", [200],
        body={"images": ["data:image/jpeg;base64,/9j/4AAQ"], "texts": ["a dog"]}, mentions=["images[0]"])
    add("classify_without_labels", "/classify", [400], body={"images": [tiny_png]}, mentions=["labels"])
    add("classify_template_without_placeholder", "/classify", [400],
        body={"images": [tiny_png], "labels": ["dog"], "template": "a photo"}, mentions=["template"])
    add("classify_top_k_zero", "/classify", [400], body={"images": [tiny_png], "labels": ["dog"], "top_k": 0},
        mentions=["top_k"])
    add("classify_top_k_negative", "/classify", [400], body={"images": [tiny_png], "labels": ["dog"], "top_k": -1},
        mentions=["top_k"])
    add("deeply_nested_json", "/embed", [400], body='{"texts": ' + "[" * 5000 + "]" * 5000 + "}",
        mentions=["invalid JSON"])
    add("texts_100000", "/v1/embeddings", [400], generate="100k_texts", mentions=["over the limit"])
    add("string_10mb", "/v1/embeddings", [400], generate="10mb_string", mentions=["over the limit"])
    add("body_20mb", "/embed", [413], generate="huge_body", mentions=["over the limit"])
    add("invalid_utf8", "/v1/embeddings", [400], generate="invalid_utf8", mentions=["invalid JSON"])
    add("images_4000", "/embed", [400], generate="many_images", mentions=["over the limit"])
    add("get_on_post_endpoint", "/embed", [405], method="GET", raw=b"")
    add("unknown_endpoint", "/v2/embeddings", [404], body={"input": "a"}, mentions=["/v2/embeddings"])
    add("multipart_without_boundary", "/embed", [400], ct="multipart/form-data", raw=b"--x\r\n\r\n",
        mentions=["multipart"])
    add("multipart_garbage", "/embed", [400], ct="multipart/form-data; boundary=XYZ",
        raw=b"this is not multipart at all", mentions=["multipart"])
    add("multipart_unknown_field", "/embed", [400], ct="multipart/form-data; boundary=XYZ",
        raw=b'--XYZ\r\nContent-Disposition: form-data; name="colour"\r\n\r\nred\r\n--XYZ--\r\n', mentions=["colour"])
    add("multipart_text_not_utf8", "/embed", [400], ct="multipart/form-data; boundary=XYZ",
        raw=b'--XYZ\r\nContent-Disposition: form-data; name="text"\r\n\r\n\xff\xfe\r\n--XYZ--\r\n', mentions=["UTF-8"])
    (OUT / "manifest.json").write_text(json.dumps(cases, indent=1) + "\n")
    print(f"{len(cases)} bad requests in {OUT}")


if __name__ == "__main__":
    main()
