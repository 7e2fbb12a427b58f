"""Alerts that reach a person: what needs attention (`conditions`, pure), what to send and
when (`ledger`, pure), sending it (`deliver`), and the loop around them (`runner`)."""
