"""QA scenarios: a YAML file of setup, timed steps and expectations, run against a real
broker and gateway (``intercom-gateway scenario run``).

``model`` defines the file format, ``loader`` reads it with line numbers, ``matching``
decides whether an observed message matches an expectation, ``runner`` drives the
broker and gateway, ``report`` renders the results.
"""
