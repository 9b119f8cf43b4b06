"""Who is acting: the authenticated party, as the domain code of every service sees it."""

from __future__ import annotations

from dataclasses import dataclass

from contracts import Role


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    role: Role

    def as_actor(self) -> dict[str, str]:
        return {"sub": self.sub, "role": self.role.value}
