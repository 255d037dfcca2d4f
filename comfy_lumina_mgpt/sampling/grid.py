"""The image-grid state machine: which tokens each sequence may produce next.

One ``GridState`` follows one sequence through the Uni-Rep layout

    TEXT --<racm3:break>--> HEIGHT --size--> WIDTH --size--> BODY (rows of w codes + <reserved08799>) --<eoss>--> TEXT

and ``TEXT --<reserved08706>--> DONE``. In BODY the end-of-line token is forced after every ``w_lat`` codes and
``<eoss>`` after the last row; between them only image codes may be sampled. It also tracks where the guidance
(unconditional) sequence is: that sequence is ``[<racm3:break>, H, W, ...]`` from position 0 for each image.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..vocab import LuminaVocab


class Phase(enum.IntEnum):
    TEXT = 0
    HEIGHT = 1
    WIDTH = 2
    BODY = 3
    DONE = 4


class Allowed(enum.IntEnum):
    """Which token set a step may sample from (an index into the sampler's mask table)."""

    TEXT = 0   # anything except image codes, end-of-line and end-of-image
    SIZE = 1   # size tokens 1..max_grid
    IMAGE = 2  # image codes only


@dataclass
class Constraint:
    allowed: Allowed
    forced: int | None  # token id that must come next, whatever is sampled
    image_params: bool  # use the image top-k/top-p/temperature
    guide_step: bool    # apply classifier-free guidance to this step (an image token); cf. SamplerConfig.guided


class GridState:
    """State of one sequence; ``constraint()`` before sampling, ``advance(token)`` after."""

    def __init__(self, vocab: LuminaVocab, force_size: tuple[int, int] | None = None,
                 force_images: int = 0, uncond_base: int = 0) -> None:
        self.vocab = vocab
        self.uncond_base = uncond_base  # length of a negative-prompt context before the guidance image
        self.force_size = force_size
        self.force_images = force_images
        self.images_done = 0
        self.phase = Phase.TEXT
        self.h_lat = self.w_lat = 0
        self.body_done = 0      # body tokens emitted so far (codes and end-of-lines)
        self.uncond_pos = uncond_base  # where the guidance sequence receives the token just fed

    @property
    def body_len(self) -> int:
        return self.h_lat * (self.w_lat + 1)

    def remaining_hint(self) -> int | None:
        """Tokens still to come for the current image (plus the closing separator), if known."""
        if self.phase == Phase.BODY:
            return self.body_len - self.body_done + 2
        if self.phase == Phase.TEXT and self.force_images and self.images_done >= self.force_images:
            return 1  # only the forced separator is left
        return None

    def constraint(self) -> Constraint:
        v = self.vocab
        if self.phase == Phase.DONE:
            return Constraint(Allowed.TEXT, v.sep_id, False, False)
        if self.phase == Phase.TEXT:
            forced = None
            if self.force_images:
                forced = v.boi_id if self.images_done < self.force_images else v.sep_id
            return Constraint(Allowed.TEXT, forced, False, False)
        if self.phase in (Phase.HEIGHT, Phase.WIDTH):
            forced = None
            if self.force_size is not None:
                forced = v.size_token(self.force_size[0 if self.phase == Phase.HEIGHT else 1])
            return Constraint(Allowed.SIZE, forced, True, False)
        if self.body_done == self.body_len:
            return Constraint(Allowed.IMAGE, v.eoi_id, True, True)
        if (self.body_done + 1) % (self.w_lat + 1) == 0:
            return Constraint(Allowed.IMAGE, v.eol_id, True, True)
        return Constraint(Allowed.IMAGE, None, True, True)

    @property
    def needs_value(self) -> bool:
        """Whether ``advance`` must see the sampled token's value (text and size steps branch on it; inside
        an image body every step is an image code or a forced token, so the sampler need not read it back)."""
        return self.phase in (Phase.TEXT, Phase.HEIGHT, Phase.WIDTH)

    @property
    def in_body(self) -> bool:
        """Between the size tokens and ``<eoss>`` of an image (the next token is a code, EOL or EOI)."""
        return self.phase == Phase.BODY

    @property
    def body_left(self) -> int:
        """Body tokens (codes and end-of-lines) still to come before ``<eoss>``; 0 outside a body."""
        return self.body_len - self.body_done if self.phase == Phase.BODY else 0

    def body_forced(self, offset: int) -> int | None:
        """The token forced ``offset`` steps ahead inside this body (EOL at a row end, EOI after the last
        row), or None where an image code is sampled. ``offset`` 0 is the next step."""
        at = self.body_done + offset
        if at == self.body_len:
            return self.vocab.eoi_id
        if (at + 1) % (self.w_lat + 1) == 0:
            return self.vocab.eol_id
        return None

    def advance(self, token: int | None) -> None:
        """Move past ``token``; raises RuntimeError if it breaks the layout (a sampler bug, not user error).

        ``token`` may be None when ``needs_value`` is False and the step was not forced (an image code whose
        value the state machine does not need).
        """
        v = self.vocab
        phase = self.phase
        if phase == Phase.DONE:
            return
        if token is None and phase != Phase.BODY:
            raise RuntimeError(f"the {phase.name} step needs the sampled token's value")
        if phase == Phase.TEXT:
            if token == v.sep_id:
                self.phase = Phase.DONE
            elif token == v.boi_id:
                self.phase, self.uncond_pos = Phase.HEIGHT, self.uncond_base
            return
        self.uncond_pos += 1
        if phase == Phase.HEIGHT:
            self.h_lat = 2 * v.size_of(token)
            self.phase = Phase.WIDTH
        elif phase == Phase.WIDTH:
            self.w_lat = 2 * v.size_of(token)
            self.phase, self.body_done = Phase.BODY, 0
        elif self.body_done == self.body_len:
            if token is not None and token != v.eoi_id:
                raise RuntimeError(f"image grid broken: expected <eoss>, got token {token}")
            self.phase = Phase.TEXT
            self.images_done += 1
        else:
            self.body_done += 1
