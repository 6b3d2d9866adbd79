"""One module per lint rule. Each defines `ID`, `DEFAULT_LEVEL`, `OPTIONS` (option
name -> default) and a `check(project, options, context)` generator of `Problem`
values; its docstring is the user documentation, with a passing and a failing example.
`flagstone.lint` holds the registry that lists them.
"""
