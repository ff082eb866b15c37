"""The AUTOM ledger's shared values: amounts, addresses, signed blocks and votes, the genesis, the wallet."""
