"""Wallet passes: Apple's signed .pkpass and Google's "save to wallet" JWT, built from one
description of the ticket, and the identities that sign them."""
