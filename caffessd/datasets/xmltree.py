"""A minimal XML tree that remembers line numbers (ElementTree forgets them),
so a bad VOC or CVAT annotation is reported as FILE:LINE."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional
from xml.parsers import expat

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
    """Parse XML bytes into XmlNodes; FormatError names FILE:LINE when malformed."""
    parser = expat.ParserCreate()
    stack: List[XmlNode] = []
    roots: List[XmlNode] = []

    def start(tag, attrs):
        node = XmlNode(tag, parser.CurrentLineNumber, attributes=dict(attrs))
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)

    def end(_tag):
        node = stack.pop()
        node.text = node.text.strip()

    def chars(text):
        if stack:
            stack[-1].text += text

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise FormatError(path, f"malformed XML: {expat.ErrorString(exc.code)}", exc.lineno) from None
    if not roots:
        raise FormatError(path, "empty XML document")
    return roots[0]
