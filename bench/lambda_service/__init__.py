"""An emulator of the AWS Lambda service on loopback: the Invoke API, throttling and payload
limits as AWS answers them, and a calibrated model of time instead of a model of the image.
It stands in for AWS itself in the evaluation's remote-serverless testbed (README.md)."""
