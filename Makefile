# The two commands a newcomer needs (see README.md).
.PHONY: quickstart test setup
setup:
	bash scripts/setup-env.sh
quickstart:
	bash scripts/quickstart.sh $(ARGS)
test:
	bash scripts/test.sh
