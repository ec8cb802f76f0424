# Mutation testing: which one-line changes to the contract modules the fast tests miss.
MODULES ?=

.PHONY: mutation

mutation: setup ## Mutate the contract modules (scripts/mutation.py lists them) with mutmut; survivors to bench/mutation.md (MODULES="config cli")
	@$(PY) scripts/mutation.py $(MODULES)
