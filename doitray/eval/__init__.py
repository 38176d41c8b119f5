"""Evaluation: serve a checkpoint (Ray Serve + vLLM), ask every suite item, score it, aggregate.

Modules (lower to higher):

- ``math_answer``  final-answer extraction and MATH-style equivalence
- ``scorers``      the scorer registry (``SCORERS``: scorer, engine kind, budget, chance per metric), pass@k
- ``sandbox``      limited, isolated execution of model-written code
- ``programs``     HumanEval/MBPP test programs and MT-Bench judge prompts
- ``suites``       ``Suite`` and the builders (DoIT in/out-of-domain, CMMLU, AGIEval, generic records)
- ``benchmarks``   typed suite entries (``SuiteSpec``) and one reader/builder per benchmark family
- ``judge``        the LLM judge (``JudgeConfig``): FastChat's grading conversations, the ``[[n]]`` parser
- ``stats``        bootstrap intervals
- ``selection``    ``select_checkpoint``: the checkpoint a cell keeps
- ``engine``       ``ServeEngine``: a Serve deployment around vLLM's ``AsyncLLM`` (CPU or GPU)
- ``evaluate``     ``evaluate_checkpoint`` / ``evaluate_and_store`` → predictions and scores rows
- ``check``        ``doitray eval check``: reference answers must score 100%
"""
