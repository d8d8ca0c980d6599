"""The model server: the paper's RESTful API, a Flask app served by waitress."""
