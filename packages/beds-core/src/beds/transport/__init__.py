"""AMQP connection and topology: the only modules that know RabbitMQ."""
