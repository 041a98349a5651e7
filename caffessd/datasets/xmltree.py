"""A minimal XML tree that remembers line numbers (ElementTree forgets them),
so a bad VOC or CVAT annotation is reported as FILE:LINE."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from caffessd.errors import FormatError


@dataclass
class XmlNode:
    tag: str
    line: int
    text: str = ""
    children: List["XmlNode"] = field(default_factory=list)
    attributes: Dict[str, str] = field(default_factory=dict)

    def find(self, tag: str) -> Optional["XmlNode"]:
        for child in self.children:
            if child.tag == tag:
                return child
        return None

    def findall(self, tag: str) -> List["XmlNode"]:
        return [child for child in self.children if child.tag == tag]


def parse_xml(data: bytes, path: Path) -> XmlNode:
    """Parse XML bytes into XmlNodes; FormatError names FILE:LINE when malformed.

    Parsed with defusedxml's rules: an entity declaration (the "billion
    laughs" of nested entities, which would expand to gigabytes) or an
    external entity or reference is refused outright, before anything
    expands. VOC annotations never need either."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import DefusedXMLParser, ParseError

    builder = _Builder()
    parser = DefusedXMLParser(target=builder)
    builder.parser = parser.parser  # the expat parser: its current line names each element
    try:
        parser.feed(data)
        parser.close()
    except DefusedXmlException as exc:
        raise FormatError(path, f"refused: {_refusal(exc)}; annotations may not declare or reference "
                                f"entities", builder.line()) from None
    except ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else None
        message = str(exc).split(": line ")[0]
        raise FormatError(path, f"malformed XML: {message}", line) from None
    if builder.root is None:
        raise FormatError(path, "empty XML document")
    return builder.root


def _refusal(exc) -> str:
    from defusedxml import DTDForbidden, EntitiesForbidden

    if isinstance(exc, EntitiesForbidden):
        return f"entity declaration <!ENTITY {exc.name} ...>"
    if isinstance(exc, DTDForbidden):
        return "document type declaration"
    return f"external reference {exc.sysid!r}"


class _Builder:
    """ElementTree parser target that builds XmlNodes with their line numbers."""

    def __init__(self):
        self.parser = None
        self.stack: List[XmlNode] = []
        self.texts: List[List[str]] = []   # text chunks of the open elements (joined once: no quadratic +=)
        self.root: Optional[XmlNode] = None

    def line(self) -> Optional[int]:
        return self.parser.CurrentLineNumber if self.parser is not None else None

    def start(self, tag, attrs):
        node = XmlNode(tag, self.line(), attributes=dict(attrs))
        if self.stack:
            self.stack[-1].children.append(node)
        elif self.root is None:
            self.root = node
        self.stack.append(node)
        self.texts.append([])

    def end(self, _tag):
        node = self.stack.pop()
        node.text = "".join(self.texts.pop()).strip()

    def data(self, text):
        if self.texts:
            self.texts[-1].append(text)

    def close(self):
        return self.root
