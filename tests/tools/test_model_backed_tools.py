"""Model-backed tools: what reaches the endpoint (the image itself and the question), through the sandbox's
host-tool pipe; a user function with file arguments confined to the working directory."""
import base64

import pytest
from fake_openai import FakeOpenAI, chat_reply

from sport_fast.sandbox.layers import REQUIRED_LAYERS, available_layers
from sport_fast.sandbox.sandbox import Sandbox
from sport_fast.tools import default_registry
from sport_fast.tools.model_backed import OpenAIVisionQA, OpenAIWebSearch, function_tool

PNG = b"\x89PNG\r\n\x1a\n fake image bytes"


def chat_server(answer: str) -> FakeOpenAI:
    """A loopback chat-completions endpoint that records each request and answers with a fixed text."""
    return FakeOpenAI(lambda path, body, server: (200, chat_reply(answer)))


@pytest.fixture(scope="module")
def weak_ok():
    return not all(available_layers()[k] for k in REQUIRED_LAYERS)


def test_visual_qa_sends_the_image_and_question_from_inside_the_sandbox(weak_ok):
    server = chat_server("three red squares")
    tools = default_registry(vqa=OpenAIVisionQA(server.url, "vlm", timeout_s=5, max_retries=0))
    assert "- visual_qa(image: str, question: str) -> str: answer a question about an image" in tools.render()
    r = Sandbox(timeout_s=20, tools=tools, allow_weak_isolation=weak_ok).run(
        "print(visual_qa('pic.png', 'What is shown?'))\ntry:\n    visual_qa('../../etc/passwd', 'x')\n"
        "except Exception as e:\n    print(e)", files={"pic.png": PNG})
    assert r.stdout.splitlines() == ["three red squares", "visual_qa: FileNotFoundError: no file '../../etc/passwd' "
                                     "in the task's working directory"], r
    content = server.requests[0][1]["messages"][0]["content"]
    assert content[0]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert content[1] == {"type": "text", "text": "What is shown?"} and len(server.requests) == 1


def test_web_search_endpoint_and_user_function(weak_ok):
    server = chat_server("Paris is the capital of France.")
    search = OpenAIWebSearch(server.url, "searcher", timeout_s=5, max_retries=0)
    assert search("capital of France", workdir="/nonexistent") == [
        {"title": "capital of France", "text": "Paris is the capital of France."}]
    seen = []

    def describe(image, detail="short"):
        seen.append((open(image, "rb").read(), detail))
        return {"caption": f"{detail} caption"}
    tools = default_registry(vqa=function_tool(describe, file_args=("image",)))
    r = Sandbox(timeout_s=20, tools=tools, allow_weak_isolation=weak_ok).run(
        "print(visual_qa('pic.png', detail='long'))", files={"pic.png": PNG})
    assert r.stdout == "{'caption': 'long caption'}\n" and seen == [(PNG, "long")]
