"""The exchange's domain: institutions, patient identity, clinical submissions.

Pure: no IO, no clock reads inside event methods. Imports only the standard library,
`eventsourcing.domain` and pydantic.
"""
