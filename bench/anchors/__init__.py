"""Anchors: what a user would otherwise pick, measured with the same generator.

- ``ocpp_csms``: a central system written the way the ``ocpp`` library
  (mobilityhouse) documents it: a ``websockets`` server and one
  ``ocpp.ChargePoint`` with ``@on`` handlers per connection.
- ``picows_responder``: a bare picows server that only reads the envelope and
  answers with a constant CALLRESULT — no validation, no broker; the practical
  limit of a Python WebSocket server.
- ``picows_echo`` / ``websockets_echo``: echo servers for the codec benchmark.
"""
