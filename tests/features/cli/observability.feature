Feature: Correlation ids and metrics
  Every answer carries an X-Correlation-Id: the caller's, echoed, or a fresh one. The
  task keeps it, so the log line written when the task ends names it. GET /metrics counts
  what happened, for Prometheus.

  Scenario: A correlation id sent is echoed and appears on the task's log line
    Given orchestra in front of the fake engine
    And its log lines are captured
    When I submit a task with the X-Correlation-Id "bdd-corr-7" and read it to its end
    Then the answer carries the X-Correlation-Id "bdd-corr-7"
    And the log line of the task's end has the correlation_id "bdd-corr-7" and the task's id

  Scenario: A request without a correlation id gets a fresh one
    Given orchestra in front of the fake engine
    When I ask for a task that does not exist
    Then the answer carries a fresh X-Correlation-Id, also in its error body

  Scenario: The metrics count the task
    Given orchestra in front of the fake engine
    When I run the prompt "count me" for 5 tokens to its end
    Then GET /metrics shows 1 task admitted, 1 task completed and 5 tokens out
