"""Tests of retention: the policy, the lifecycle rules, classification and the sweep."""
