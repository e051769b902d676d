"""Chat messages in the OpenAI format, media inlined as base64 `data:` URLs.

Text and media parts follow the order the project's templates use (media
first, then the text). Images travel as `image_url` parts (the OpenAI
format), audio as `input_audio` parts (OpenAI's, with the file's format) and
video as `video_url` parts (the extension vLLM and SGLang servers read).
"""

from __future__ import annotations

import base64
import mimetypes
from typing import Any, Mapping

from omni_rrm_jax.data.records import resolve_media_path

_AUDIO_FORMATS = {".wav": "wav", ".mp3": "mp3", ".flac": "flac", ".ogg": "ogg", ".m4a": "m4a"}


def _data_url(path, fallback_mime: str) -> str:
  mime = mimetypes.guess_type(str(path))[0] or fallback_mime
  return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def media_content(media: Mapping[str, Any], media_root: str) -> list[dict[str, Any]]:
  """OpenAI content parts for a record's media (images, then video, then audio)."""
  parts = []
  for image in media.get("images") or []:
    url = _data_url(resolve_media_path(media_root, image, must_exist=True), "image/png")
    parts.append({"type": "image_url", "image_url": {"url": url}})
  if media.get("video"):
    url = _data_url(resolve_media_path(media_root, media["video"], must_exist=True), "video/mp4")
    parts.append({"type": "video_url", "video_url": {"url": url}})
  if media.get("audio"):
    path = resolve_media_path(media_root, media["audio"], must_exist=True)
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    parts.append({"type": "input_audio", "input_audio": {
        "data": data, "format": _AUDIO_FORMATS.get(path.suffix.lower(), "wav")}})
  return parts


def user_message(text: str, media: Mapping[str, Any], media_root: str) -> list[dict[str, Any]]:
  """A one-turn conversation: the media parts and the text (plain text without media)."""
  parts = media_content(media, media_root)
  content: Any = [*parts, {"type": "text", "text": text}] if parts else text
  return [{"role": "user", "content": content}]
