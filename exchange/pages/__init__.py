"""The exchange's web pages for physicians, regulators and patients: server-rendered HTML on the
read API's app, every page behind the same gate as its API route."""
