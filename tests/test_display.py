"""rag.display.html: the HTML that notebooks show (escaping, highlights, thumbnails, links, counts)."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from rag.display import html as display
from rag.display.html import (
    MAX_THUMB_BYTES,
    answer_view,
    collection_summary,
    highlight,
    hits_view,
    image_grid,
    nodes_table,
    passage_list,
    prompt_view,
    query_terms,
    thumbnail,
)
from rag.types import Answer, Hit

DATA_URL = re.compile(r'src="(data:image/(?:jpeg|png);base64,[A-Za-z0-9+/=]+)"')


def decode(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1], validate=True)))


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, Path]:
    big = tmp_path / "big.jpg"
    Image.effect_noise((2400, 1600), 80).convert("RGB").save(big, quality=95)  # noisy: large file
    logo = tmp_path / "logo.png"
    Image.new("RGBA", (300, 100), (255, 0, 0, 100)).save(logo)
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (0, 128, 0)).save(small)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    return {"big": big, "logo": logo, "small": small, "broken": broken, "missing": tmp_path / "gone.jpg"}


def image_hit(path, score=0.5, title="Tower", url="https://en.wikipedia.org/wiki/Tower", caption=None, node_id=None):
    where = str(path) if path is not None else None
    return Hit("image", score, node_id or f"img-{where}", url or where or "?", title=title, url=url,
               file=where, text=caption, image_path=where)


def text_hit(text, score=0.8, title="Tower", url="https://en.wikipedia.org/wiki/Tower", node_id="t1"):
    return Hit("text", score, node_id, url or "article.md", title=title, url=url, text=text)


# --------------------------------------------------------------------------- views are HTML


def test_view_is_html_for_jupyter_and_for_str(photos):
    view = image_grid([image_hit(photos["small"])])
    assert view._repr_html_() == str(view) == view.html
    assert view.html.startswith('<div class="rag-view"><style>')
    assert repr(view) == "<HtmlView: 1 of 1 images>"


def test_save_writes_a_self_contained_page(photos, tmp_path):
    page = image_grid([photos["small"]]).save(tmp_path / "grid.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and '<meta charset="utf-8">' in page
    assert len(DATA_URL.findall(page)) == 1 and str(photos["small"]) not in page  # inline, no file reference


def test_works_without_ipython_or_matplotlib(photos):
    code = (
        "import sys; sys.modules['IPython'] = None\n"
        "from rag import display\n"
        f"html = str(display.image_grid([{str(photos['small'])!r}]))\n"
        "assert 'data:image/' in html\n"
        "assert 'matplotlib' not in sys.modules and 'torch' not in sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --------------------------------------------------------------------------- escaping and highlights


def test_query_terms_drop_stopwords_and_repeats():
    assert query_terms("What is the Eiffel tower, and where is the TOWER?") == ["eiffel", "tower"]
    assert query_terms("") == [] and query_terms(None) == []


def test_highlight_escapes_every_piece():
    text = 'The cat & <cats> "purr" <script>alert(1)</script>'
    assert highlight(text, ["cat"]) == (
        "The <mark>cat</mark> &amp; &lt;<mark>cats</mark>&gt; &quot;purr&quot; "
        "&lt;script&gt;alert(1)&lt;/script&gt;"
    )
    # Terms match the raw text, never the entities escaping adds.
    assert highlight("fish & chips", ["amp", "quot", "lt"]) == "fish &amp; chips"
    # A query that looks like markup is matched as words and stays text.
    assert highlight("mark my words", query_terms("<mark>")) == "<mark>mark</mark> my words"
    assert highlight("<b>bold</b>", []) == "&lt;b&gt;bold&lt;/b&gt;"


def test_passage_list_escapes_highlights_and_links():
    hits = [
        text_hit('Towers <img src=x onerror="alert(1)"> are tall; the tower is 330 m.', 0.8123,
                 title="<b>Tower</b>", url="https://en.wikipedia.org/wiki/Tower?a=1&b=2"),
        text_hit("A javascript link must not be clickable.", 0.5, title="Evil", url="javascript:alert(1)", node_id="t2"),
    ]
    html = str(passage_list(hits, "how tall is the tower?"))
    assert "<img src=x" not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "<mark>Towers</mark>" in html and "<mark>tower</mark>" in html and "<mark>tall</mark>" in html
    assert "<mark>the</mark>" not in html and "<mark>is</mark>" not in html
    assert '<a href="https://en.wikipedia.org/wiki/Tower?a=1&amp;b=2" target="_blank" rel="noopener noreferrer">' \
           "&lt;b&gt;Tower&lt;/b&gt;</a>" in html
    assert "javascript:" not in html.split("</style>", 1)[1].replace("A javascript link", "")
    assert "<b>Evil</b>" in html  # shown as text, not linked
    assert "score 0.812" in html and "score 0.500" in html
    assert html.count("<li>") == 2


def test_long_passages_are_cut_near_the_first_match():
    text = "filler " * 200 + "the Eiffel tower stands here " + "more " * 200
    html = str(passage_list([text_hit(text)], "eiffel", max_chars=120))
    body = re.search(r"<br>(.*?)</li>", html).group(1)
    assert "<mark>Eiffel</mark>" in body
    assert body.startswith("… ") and body.endswith(" …")
    assert len(re.sub(r"<[^>]+>", "", body)) <= 120 + 4


# --------------------------------------------------------------------------- thumbnails


def test_grid_embeds_bounded_thumbnails(photos):
    hits = [image_hit(photos["big"], 0.31234, caption="A <noisy> picture"), image_hit(photos["logo"], 0.2),
            image_hit(photos["small"], 0.1)]
    html = str(image_grid(hits, thumb_side=160))
    urls = DATA_URL.findall(html)
    assert len(urls) == 3
    big, logo, small = (decode(u) for u in urls)
    assert max(big.size) == 160 and big.size == (160, 107) and big.format == "JPEG"
    assert logo.format == "PNG" and logo.mode == "RGBA" and logo.size == (160, 53)  # transparency kept
    assert small.size == (40, 30)  # never enlarged
    for url in urls:
        assert len(base64.b64decode(url.split(",", 1)[1])) <= MAX_THUMB_BYTES
    assert len(html) < 3 * MAX_THUMB_BYTES * 4 // 3 + 10_000
    assert 'width="160" height="107"' in html
    assert "score 0.312" in html and "score 0.200" in html
    assert "A &lt;noisy&gt; picture" in html and "<noisy>" not in html
    assert html.count('href="https://en.wikipedia.org/wiki/Tower"') == 3


def test_thumbnail_side_is_clamped_and_size_capped(photos):
    huge = thumbnail(photos["big"], side=10_000)
    assert max(huge.width, huge.height) == display.MAX_THUMB_SIDE
    assert len(base64.b64decode(huge.data_url.split(",", 1)[1])) <= MAX_THUMB_BYTES
    tiny = thumbnail(photos["big"], side=1)
    assert max(tiny.width, tiny.height) == display.MIN_THUMB_SIDE


def test_a_transparent_image_too_large_as_png_is_flattened_to_jpeg(tmp_path):
    noise = Image.effect_noise((600, 600), 20)
    path = tmp_path / "noisy.png"
    Image.merge("RGBA", [noise, noise, noise, Image.new("L", (600, 600), 128)]).save(path)
    thumb = thumbnail(path, side=512)
    assert (thumb.mime, thumb.width, thumb.height) == ("image/jpeg", 512, 512)
    assert len(base64.b64decode(thumb.b64)) <= MAX_THUMB_BYTES
    small = thumbnail(path, side=64)  # small enough to stay a PNG with its transparency
    assert small.mime == "image/png" and decode(small.data_url).mode == "RGBA"


def test_grid_limits_the_number_of_images(photos):
    hits = [image_hit(photos["small"], node_id=f"i{i}") for i in range(30)]
    view = image_grid(hits, max_images=5)
    assert len(DATA_URL.findall(str(view))) == 5
    assert "25 more images not shown" in str(view)
    assert repr(view) == "<HtmlView: 5 of 30 images>"


def test_missing_and_broken_images_show_a_placeholder(photos):
    html = str(image_grid([image_hit(photos["missing"]), image_hit(photos["broken"]), image_hit(None)]))
    assert html.count("image unavailable") == 3
    assert "data:image/" not in html


def test_grid_accepts_paths_pairs_sources_nodes_and_dicts(photos):
    from llama_index.core.schema import ImageNode, NodeWithScore

    node = ImageNode(image_path=str(photos["small"]), metadata={"title": "Node title", "modality": "image"})
    items = [
        photos["small"],
        (photos["small"], "a <pair>"),
        Hit("image", 0.7, "s3", "s", title="Source title", image_path=str(photos["small"]), n=3),
        NodeWithScore(node=node, score=0.25),
        {"modality": "image", "title": "Dict title", "image_path": str(photos["small"])},
        text_hit("ignored: not an image"),
    ]
    html = str(image_grid(items))
    assert len(DATA_URL.findall(html)) == 5
    assert "small.png" in html and "a &lt;pair&gt;" in html
    assert "[3] Source title" in html and "score 0.700" in html
    assert "Node title" in html and "score 0.250" in html and "Dict title" in html
    assert "ignored" not in html


def test_hits_view_shows_passages_then_images(photos):
    view = hits_view([text_hit("The tower is tall."), image_hit(photos["small"], 0.3)], "tower")
    html = str(view)
    assert html.index("Passages (1)") < html.index("Images (1)")
    assert "<mark>tower</mark>" in html and len(DATA_URL.findall(html)) == 1
    assert repr(view) == "<HtmlView: 1 passages; 1 of 1 images>"
    assert "Images" not in str(hits_view([text_hit("x")]))  # a text-only search shows no empty grid
    empty = str(hits_view([]))
    assert "No passages." in empty and "No images." in empty


# --------------------------------------------------------------------------- answers


@pytest.fixture
def sources(photos) -> list[Hit]:
    url = "https://en.wikipedia.org/wiki/Eiffel_Tower"
    return [
        Hit("text", 0.9, "t1", url, title="Eiffel Tower", url=url, text="Finished in 1889 for the <World's> Fair.", n=1),
        Hit("text", 0.8, "t2", "notes.md", title="Notes", text="Local notes.", n=2),
        Hit("image", 0.3, "i3", url, title="Eiffel Tower", url=url, text="The tower at night", image_path=str(photos["big"]),
            n=3),
    ]


def test_answer_links_citations_and_shows_thumbnails(sources, photos):
    answer = Answer(question="When was it <built>?", answer="Built in 1889 [1].\nLit at night [3]. Bogus [9].",
                    sources=sources, cited=[sources[0], sources[2]], unknown_citations=[9],
                    image=str(photos["small"]), llm={"backend": "openai-like", "model": "qwen-vl"}, vision=True)
    view = answer_view(answer)
    html = str(view)
    anchor = re.search(r'href="#(rag-src-[0-9a-f]{8})-1"', html).group(1)
    assert f'[<a href="#{anchor}-1">1</a>]' in html and f'[<a href="#{anchor}-3">3</a>]' in html
    assert f'id="{anchor}-1"' in html and f'id="{anchor}-3"' in html
    assert "Bogus [9]" in html and "Cited numbers that match no source: 9" in html
    assert "Built in 1889" in html and "<br>Lit at night" in html
    assert "When was it &lt;built&gt;?" in html and "&lt;World&#x27;s&gt;" in html
    assert '<a href="https://en.wikipedia.org/wiki/Eiffel_Tower" target="_blank"' in html
    assert "<b>Notes</b>" in html and "(not cited)" in html  # no URL: plain text; [2] not cited
    assert "Answered by openai-like qwen-vl (images sent)." in html
    assert len(DATA_URL.findall(html)) == 2  # the question image and source [3]
    assert repr(view) == "<HtmlView: 3 sources, 2 cited>"
    assert str(answer_view(answer.to_dict())) == html  # the dict form renders the same


def _anchor(html: str) -> str:
    return re.search(r'id="(rag-src-[0-9a-f]{8})-1"', html).group(1)


def test_answer_links_source_n_citations_like_the_engine(sources):
    from rag.answer.citations import parse_citations

    text = "Local notes say so [source 2]."
    cited, unknown = parse_citations(text, sources)
    html = str(answer_view(Answer(question="q", answer=text, sources=sources, cited=cited)))
    assert [s.n for s in cited] == [2] and unknown == []
    assert f'so [<a href="#{_anchor(html)}-2">2</a>].' in html and "[source 2]" not in html


def test_answer_links_ranges_like_the_engine(sources):
    from rag.answer.citations import parse_citations

    text = "All three agree [1-3]."
    cited, unknown = parse_citations(text, sources)
    html = str(answer_view(Answer(question="q", answer=text, sources=sources, cited=cited)))
    assert [s.n for s in cited] == [1, 2, 3] and unknown == []
    a = _anchor(html)
    assert f'agree [<a href="#{a}-1">1</a>, <a href="#{a}-2">2</a>, <a href="#{a}-3">3</a>].' in html
    assert "(not cited)" not in html


def test_a_citation_naming_an_unknown_source_stays_text(sources):
    html = str(answer_view(Answer(question="q", answer="See [2-4] and [source 9].", sources=sources)))
    assert "See [2-4] and [source 9]." in html and 'href="#rag-src-' not in html


def test_answer_view_takes_responses_and_streams(sources):
    from llama_index.core.base.response.schema import Response

    from rag.answer.attempts import AnswerStream

    answer = Answer(question="q", answer="See [2].", sources=sources, cited=[sources[1]])
    html = str(answer_view(answer))
    assert str(answer_view(Response(response="See [2].", metadata=answer.to_dict()))) == html
    stream = AnswerStream(sources, iter(["See ", "[2]."]), lambda text: answer)
    assert str(answer_view(stream)) == html
    with pytest.raises(TypeError, match="got int"):
        answer_view(3)


def test_answer_without_llm_shows_the_prompt_with_images(sources, photos):
    from rag.answer.prompt import build_prompt

    prompt = build_prompt("What is <this>?", sources, question_image=photos["small"])
    answer = Answer(question="What is <this>?", answer=None, sources=sources, prompt=prompt.render(),
                    prompt_parts=prompt.to_parts(), image=str(photos["small"]))
    html = str(answer_view(answer))
    assert "No LLM was called (RAG_LLM=none)" in html
    assert "&lt;image [3]&gt;" in html and "&lt;question image&gt;" in html
    assert str(photos["big"]) not in html.split('class="rag-prompt"', 1)[1].split("</div>", 1)[0]
    assert "Question: What is &lt;this&gt;?" in html and "<this>" not in html
    assert len(DATA_URL.findall(html)) == 4  # question image on top, two in the prompt, source [3]
    assert "(not cited)" not in html


def test_prompt_view_draws_only_image_parts_as_images(photos):
    # A passage that contains placeholder-like text stays text: images come from the parts only.
    parts = [{"text": f"A passage quoting <image [1]: {photos['small']}>\n"}, {"image": str(photos["small"]), "n": 2}]
    html = str(prompt_view(parts))
    assert len(DATA_URL.findall(html)) == 1 and "&lt;image [2]&gt;" in html
    assert f"A passage quoting &lt;image [1]: {photos['small']}&gt;" in html
    assert repr(prompt_view(parts)) == "<HtmlView: prompt with 1 images>"


def test_prompt_view_leaves_unknown_markup_escaped():
    html = str(prompt_view([{"text": "A <b>passage</b>\n"}, {"image": "/nowhere.png", "n": 2}]))
    assert "A &lt;b&gt;passage&lt;/b&gt;" in html and "image unavailable" in html


# --------------------------------------------------------------------------- collections


def test_collection_summary_from_info():
    info = {"storage": "/data/<idx>", "store": "edge", "location": "/data/idx/edge",
            "collections": {"text": {"name": "text", "points": 120}, "image": {"name": "image", "points": 37}},
            "models": {"text": "BAAI/bge-small-en-v1.5", "image": "openai/clip-vit-base-patch32"}, "files": 42}
    view = collection_summary(info)
    html = str(view)
    assert "<td>text</td><td>text</td><td style=\"text-align:right\">120</td><td>BAAI/bge-small-en-v1.5</td>" in html
    assert ">37</td><td>openai/clip-vit-base-patch32</td>" in html
    assert "Storage /data/&lt;idx&gt; (edge: /data/idx/edge); 42 files indexed." in html
    assert repr(view) == "<HtmlView: 2 collections, 157 points>"


def test_summary_and_tables_of_a_real_index(open_test_index, corpus):
    from rag.index.ingest import ingest

    index = open_test_index()
    ingest(index, [corpus], progress=False)
    html = str(collection_summary(index))
    assert ">3</td>" in html and html.count("<tr>") == 3  # header + 2 collections; 3 points each
    text_table = nodes_table(index.stores.text.get_nodes(limit=10))
    assert repr(text_table) == "<HtmlView: 3 of 3 points>"
    assert "The cat is a small domestic animal" in str(text_table) and "<td>Cat</td>" in str(text_table)
    images = index.stores.image.get_nodes(limit=10)
    table = str(nodes_table(images, columns=("title", "file_name"), limit=2))
    assert len(DATA_URL.findall(table)) == 2 and "1 more not shown" in table
    grid = str(image_grid(images, show_scores=False))
    assert len(DATA_URL.findall(grid)) == 3 and "score" not in grid.split("</style>", 1)[1]
