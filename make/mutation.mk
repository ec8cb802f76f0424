# Mutation testing: which one-line changes to the contract modules the fast tests miss.
MODULES ?=

.PHONY: mutation

mutation: setup ## Mutate publish/config/errors/archive/custom/cli-exit with mutmut; survivors to bench/mutation.md (MODULES="archive errors")
	@$(PY) scripts/mutation.py $(MODULES)
