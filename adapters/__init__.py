"""Adapters: turn what hospital systems send (FHIR R4, later HL7 v2 and CSV) into canonical
submissions, sign them, and publish them to the exchange."""
