"""Tests of router.ocppj: schemas, generated validators, envelope, dialects."""
