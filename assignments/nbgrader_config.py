# nbgrader's configuration for apr-mini's assignments (see assignments/README.md).
# `python -m apr_mini assignments generate` and `... grade` run nbgrader with this folder as the course root.
c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "apr-mini"
c.ClearSolutions.code_stub = {
    "python": "# YOUR CODE HERE (the docstring above is the specification)\nraise NotImplementedError(\"write this part: see the docstring and the visible tests below\")"
}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ExecutePreprocessor.timeout = 600
