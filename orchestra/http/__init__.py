"""The HTTP face: the QuartTrio app (:mod:`.app`), one blueprint per face (:mod:`.tasks`,
:mod:`.control`, :mod:`.catalog`), the auth gate, SSE, and :mod:`.envelope`, the one place a
refusal becomes a status, headers and the error envelope."""
