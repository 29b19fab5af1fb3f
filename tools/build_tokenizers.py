"""Offline CLIP tokenizers for SDXL, built from the BPE vocab that ships inside the open_clip_torch package.

sd-scripts loads its two tokenizers from <tokenizer_cache_dir>/<hub id with "/" -> "_"> when that folder exists
(library/strategy_base.py _load_tokenizer), so with these folders training needs no Hugging Face hub. Both SDXL
tokenizers are the same CLIP BPE (49,408 tokens); bigG differs only in its pad token ("!", which sd-scripts
forces to id 0 anyway). Each folder gets vocab.json, merges.txt and tokenizer_config.json: without
model_max_length 77 in the config, CLIPTokenizer's max length is ~1e30 and tokenizing overflows.

usage: python tools/build_tokenizers.py OUT_DIR [--bpe bpe_simple_vocab_16e6.txt.gz]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

# folder name -> pad token (sd-scripts' hub ids: library/strategy_sdxl.py TOKENIZER1_PATH / TOKENIZER2_PATH)
TOKENIZER_FOLDERS = {
    "openai_clip-vit-large-patch14": "<|endoftext|>",
    "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k": "!",
}
VOCAB_SIZE = 49408
MODEL_MAX_LENGTH = 77
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def default_bpe_path() -> Path:
    """open_clip's vocab file, located without importing open_clip (that would import torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise SystemExit(f"error: open_clip_torch is not installed: pass --bpe path/to/{BPE_NAME}")
    return Path(spec.origin).parent / BPE_NAME


def _bytes_to_unicode() -> list[str]:
    """The byte -> printable character table of GPT-2/CLIP BPE, in byte order of the base vocab."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def clip_vocab(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    """(token -> id, merges) exactly as open_clip's SimpleTokenizer builds them."""
    try:
        lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    except OSError as e:
        raise SystemExit(f"error: cannot read the CLIP BPE vocab {bpe_gz}: {e}") from e
    merges = lines[1 : 49152 - 256 - 2 + 1]  # the slice open_clip SimpleTokenizer uses: 48,894 merges
    base = _bytes_to_unicode()
    tokens = base + [t + "</w>" for t in base] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    if len(tokens) != VOCAB_SIZE or len(set(tokens)) != VOCAB_SIZE:
        raise SystemExit(f"error: {bpe_gz} is not the CLIP BPE vocab ({len(set(tokens))} distinct tokens, want {VOCAB_SIZE})")
    return {t: i for i, t in enumerate(tokens)}, merges


def _added_token(content: str) -> dict:
    return {"content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": True,
            "__type": "AddedToken"}


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are plain shared files
    os.replace(tmp, path)


def write_tokenizer_folder(folder: Path, encoder: dict[str, int], merges: list[str], pad_token: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "add_prefix_space": False,
        "bos_token": _added_token(BOS),
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": _added_token(EOS),
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": _added_token(pad_token) if pad_token == EOS else pad_token,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": _added_token(EOS),
    }
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": pad_token, "unk_token": EOS}
    _write_atomic(folder / "vocab.json", json.dumps(encoder, ensure_ascii=False))
    _write_atomic(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    _write_atomic(folder / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False))
    _write_atomic(folder / "special_tokens_map.json", json.dumps(special, indent=2, ensure_ascii=False))


def build_tokenizers(out_dir: Path, bpe_gz: Path | None = None) -> list[Path]:
    """Write both SDXL tokenizer folders under out_dir (the value for sd-scripts' tokenizer_cache_dir)."""
    encoder, merges = clip_vocab(bpe_gz or default_bpe_path())
    folders = []
    for name, pad in TOKENIZER_FOLDERS.items():
        write_tokenizer_folder(out_dir / name, encoder, merges, pad)
        folders.append(out_dir / name)
    return folders


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path, help="becomes sd-scripts' tokenizer_cache_dir")
    p.add_argument("--bpe", type=Path, default=None, help=f"{BPE_NAME} (default: the one in open_clip_torch)")
    args = p.parse_args(argv)
    for folder in build_tokenizers(args.out_dir, args.bpe):
        print(f"wrote {folder}")


if __name__ == "__main__":
    main(sys.argv[1:])
