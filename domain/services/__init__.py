"""Domain services: the rules of the exchange that span aggregates, as pure code.

Each service takes what it needs through a small Protocol (a repository or lookup) and never
the ledger, so the rules run the same against the ledger's PostgreSQL and against the
in-memory fakes of the unit tests:

- ``identity``: the regional patient index — resolve, link, merge, unmerge.
- ``referrals``: planning a submission's referral items against the transition table.
- ``submissions``: the checks a batch of submissions passes before it is saved (corrections
  name a held record, withdrawals name this patient's consent, a consent's scope names known
  institutions), and the plan of what the batch saves.
- ``refusal``: ``SubmissionRefused``, the one error they raise, carrying its problems.
"""
