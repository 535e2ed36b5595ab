"""Verify a served model against the golden set saved with its export.

`compare` is pure (arrays in, verdict out); `golden` reads the .npz; `runner`
is the only part that talks to a server (through `serving.client`).
"""
